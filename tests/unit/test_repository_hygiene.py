"""What must never be committed: credentials, private keys, this machine's paths, generated artefacts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(r"aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{40}\b", re.I),
    "private key": re.compile(r"-----BEGIN (RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
    "Slack token": re.compile(r"\bxox[baprs]-[A-Za-z0-9-]{10,}\b"),
}
GENERATED = re.compile(r"(^|/)(cdk\.out|\.venv|node_modules|__pycache__|demo-out|layers/build)(/|$)|\.onnx$|\.pyc$")


def _tracked() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [ROOT / name for name in out.stdout.decode().split("\0") if name]


def test_no_credentials_or_private_keys_are_committed() -> None:
    found = []
    for path in _tracked():
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        for what, pattern in SECRETS.items():
            for match in pattern.finditer(text):
                if "EXAMPLE" not in match.group(0):
                    found.append(f"{path.relative_to(ROOT)}: {what} {match.group(0)[:12]}...")
    assert not found, "\n".join(found)


def test_no_generated_artefacts_or_local_paths_are_committed() -> None:
    tracked = _tracked()
    generated = [str(p.relative_to(ROOT)) for p in tracked if GENERATED.search(str(p.relative_to(ROOT)))]
    assert not generated, generated
    home = re.compile(r"/(home|Users)/[a-z][\w.-]+/|/root/\.pyenv|/work/main")
    texts = [p for p in tracked if p.is_file() and p != Path(__file__).resolve()
             and p.suffix in {".py", ".toml", ".json", ".md", ".yml", ".yaml", ".cfg", ".txt"}]
    leaking = [str(p.relative_to(ROOT)) for p in texts if home.search(p.read_text(errors="ignore"))]
    assert not leaking, leaking


# The design notes written before the code lived outside the repository, where a clone cannot follow a reference to
# them; docs/architecture.md replaced them and names them once, in its history note. Spelled in two parts so that this
# file is scanned like any other.
DESIGN_NOTE = "DESIGN" + ".md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
HISTORY_NOTE = "## History of this page"


def _without_history_note(text: str) -> str:
    before, heading, rest = text.partition(HISTORY_NOTE)
    assert heading, f"docs/architecture.md has no {HISTORY_NOTE!r} section; the reference check depends on it"
    following = rest.find("\n## ")  # a section after the note is checked like the rest
    return before + (rest[following:] if following >= 0 else "")


def test_no_file_refers_to_the_design_note_outside_the_repository() -> None:
    tracked = _tracked()  # skips outside a git checkout
    # the files git would add too: a new reference is caught before it is committed
    out = subprocess.run(["git", "ls-files", "-z", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True,
                         check=True)
    files = {*tracked, *(ROOT / name for name in out.stdout.decode().split("\0") if name)}
    assert ARCHITECTURE in files, "docs/architecture.md is missing: it is where the design is documented"
    found = []
    for path in sorted(files):
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        if path == ARCHITECTURE:
            text = _without_history_note(text)
        found += [f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}"
                  for number, line in enumerate(text.splitlines(), 1) if DESIGN_NOTE in line]
    assert not found, (f"{DESIGN_NOTE} is not in the repository (a clone does not have it); point these at "
                       "docs/architecture.md instead:\n" + "\n".join(found))


def test_no_module_of_the_package_is_long_without_a_reason() -> None:
    """One room per concern, and rooms of short modules: a module over about 400 lines says in its docstring why it is
    one module (issue 16). A new long module fails here until it is split or says why."""
    import ast

    package = Path(__file__).resolve().parents[2] / "src" / "mlops"
    long_and_silent = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") <= 420:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if "Why one module of this length" not in docstring:
            long_and_silent.append(f"{path.relative_to(package)} ({text.count(chr(10))} lines)")
    assert not long_and_silent, long_and_silent
