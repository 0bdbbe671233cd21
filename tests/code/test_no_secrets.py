"""No credential-looking literal is committed (keys come from the environment or
Kubernetes Secrets)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.code

PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret key assignment": re.compile(
        r"(?i)aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+]{40}\b"
    ),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    # <placeholders> of the Secret templates are not passwords
    "password in a URL": re.compile(r"[a-z]+://[^/\s:@]+:(?!<)[^@\s/]{6,}@"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
}


def test_no_committed_secrets():
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    found = []
    for name in listed.stdout.splitlines():
        path = ROOT / name
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        text = path.read_text(errors="ignore")
        found += [f"{name}: {kind}" for kind, rx in PATTERNS.items() if rx.search(text)]
    assert not found, found
