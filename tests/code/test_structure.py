"""The house rules that keep the code easy to change: one-way package arrows, small
modules, and DVC stages that depend on every module their command runs."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.code

# The command of a stage -> the library module that implements it (cli.py is the thin
# adapter). Modules that cannot change a stage's outputs (messages, progress bars) are
# not dependencies.
COMMANDS = {
    "validate": ["skinlesion.validation"],
    "split": ["skinlesion.split"],
    "eda": ["skinlesion.eda"],
    "oversample": ["skinlesion.oversample"],
    "train": ["skinlesion.train"],
    "evaluate": ["skinlesion.evaluate", "skinlesion.evaluation_plots"],
    "promote": ["skinlesion.promote"],
    "tune": ["skinlesion.tune", "skinlesion.tune_report"],
}
NOT_OUTPUT = {"skinlesion/errors.py", "skinlesion/progress.py"}
MAX_LINES = 350


def test_the_library_imports_neither_pipelines_nor_components():
    code = (
        "import sys, skinlesion, skinlesion.cli, skinlesion.train, skinlesion.promote; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pipelines', 'components')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_no_library_source_names_pipelines_or_components():
    for file in (ROOT / "skinlesion").rglob("*.py"):
        for name in _imports(file):
            assert name.split(".")[0] not in ("pipelines", "components"), (file, name)


def test_modules_stay_small_or_say_why():
    for folder in ("skinlesion", "pipelines", "components"):
        for file in (ROOT / folder).rglob("*.py"):
            text = file.read_text()
            if text.count("\n") > MAX_LINES:
                docstring = ast.get_docstring(ast.parse(text)) or ""
                assert "long because" in docstring, f"{file}: over {MAX_LINES} lines"


def _module_file(name: str) -> Path | None:
    path = ROOT / Path(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(file: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return names


def _closure(modules: list[str]) -> set[str]:
    """Every skinlesion source file the modules import, at any depth (function-level
    imports included), as paths relative to the project."""
    seen: set[Path] = set()
    todo = list(modules)
    while todo:
        file = _module_file(todo.pop())
        if file is None or file in seen:
            continue
        seen.add(file)
        todo += [n for n in _imports(file) if n.startswith("skinlesion")]
    return {str(f.relative_to(ROOT)) for f in seen}


@pytest.mark.parametrize("dvc_file", ["dvc.yaml", "tune/dvc.yaml"])
def test_every_stage_depends_on_the_modules_its_command_runs(dvc_file):
    stages = yaml.safe_load((ROOT / dvc_file).read_text())["stages"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        command = re.search(r"skinlesion (\S+)", body["cmd"]).group(1)
        deps = [d for d in body["deps"] if d.startswith("skinlesion")]
        needed = _closure(COMMANDS[command]) - NOT_OUTPUT
        missing = {f for f in needed if not any(f == d or f.startswith(f"{d}/") for d in deps)}
        assert not missing, f"stage {name} lacks deps {sorted(missing)}"
        stale = [d for d in deps if not (ROOT / d).exists()]
        assert not stale, f"stage {name} names missing deps {stale}"
