"""The commit-msg hook `make install` puts in place: a subject of at most 72 characters, a
blank line, then a body that says why."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.code

HOOK = ROOT / ".githooks" / "commit-msg"


def _check(tmp_path: Path, message: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "COMMIT_EDITMSG"
    path.write_text(message, encoding="utf-8")
    return subprocess.run([str(HOOK), str(path)], capture_output=True, text=True)


def test_a_short_subject_with_a_body_passes(tmp_path: Path) -> None:
    message = "Split by lesion\n\nImages of one lesion must not straddle the split.\n# git's hint\n"
    assert _check(tmp_path, message).returncode == 0


@pytest.mark.parametrize(
    ("message", "says"),
    [
        ("x" * 73 + "\n\nwhy\n", "73 characters"),
        ("Subject only\n", "no body"),
        ("Subject\nbody glued to it\n", "line 2 must be blank"),
        ("\n\nbody\n", "subject is empty"),
    ],
)
def test_a_bad_message_is_refused_with_its_reason(tmp_path: Path, message: str, says: str) -> None:
    result = _check(tmp_path, message)
    assert result.returncode == 1
    assert says in result.stderr


def test_merges_keep_gits_own_subject(tmp_path: Path) -> None:
    assert _check(tmp_path, "Merge branch 'x' into main\n").returncode == 0


def test_make_install_points_git_at_the_hook() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "git config core.hooksPath .githooks" in makefile
