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
