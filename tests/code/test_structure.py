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

from tests.helpers import ROOT

pytestmark = pytest.mark.code

# The command of a stage -> the library module that implements it (skinlesion/cli holds
# the thin adapters). Modules that cannot change a stage's outputs (messages, progress
# bars) are not dependencies.
COMMANDS = {
    "validate": ["skinlesion.data.validation"],
    "split": ["skinlesion.data.split"],
    "eda": ["skinlesion.data.eda"],
    "oversample": ["skinlesion.data.oversample"],
    "train": ["skinlesion.training.lifecycle"],
    "ensemble": ["skinlesion.training.ensemble"],
    "evaluate": [
        "skinlesion.evaluation.evaluate",
        "skinlesion.evaluation.plots",
        "skinlesion.evaluation.compare",  # the predictions' format
    ],
    "compare": ["skinlesion.evaluation.compare"],
    "promote": ["skinlesion.promotion.promote"],
    "tune": ["skinlesion.tuning.study", "skinlesion.tuning.report"],
}
NOT_OUTPUT = {"skinlesion/errors.py", "skinlesion/progress.py"}
MAX_LINES = 450
MAX_ROOT_MODULES = 12
# The concerns of the package, in the order arrows may run: a module imports from its own
# concern, from the package root (vocabulary, errors, provenance) and from concerns
# earlier in this list, never from a later one. ``config`` comes first: every step reads it.
LAYERS = [
    "config",
    "data",
    "model",
    "training",
    "evaluation",
    "promotion",
    "serving",
    "review",
    "monitoring",
    "tuning",
    "cli",
]


def test_the_library_imports_neither_pipelines_nor_components():
    code = (
        "import sys, skinlesion, skinlesion.cli.main, skinlesion.training.lifecycle, "
        "skinlesion.promotion.promote; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pipelines', 'components')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_no_library_source_names_pipelines_or_components():
    for file in (ROOT / "skinlesion").rglob("*.py"):
        for name in _imports(file):
            assert name.split(".")[0] not in ("pipelines", "components"), (file, name)


def test_modules_stay_small():
    for folder in ("skinlesion", "pipelines", "components"):
        for file in (ROOT / folder).rglob("*.py"):
            lines = file.read_text().count("\n")
            assert lines <= MAX_LINES, f"{file}: {lines} lines, over {MAX_LINES}"


def _module_file(name: str) -> Path | None:
    path = ROOT / Path(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(file: Path) -> list[str]:
    """Every module ``file`` imports, at any depth (function-level, lazy imports too), but
    not under ``if TYPE_CHECKING:``: those name types for the reader and never run."""
    tree = ast.parse(file.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for statement in node.body
        for inner in ast.walk(statement)
    }
    names = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
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
        commands = re.findall(r"skinlesion (\S+)", body["cmd"])  # one, or a chain
        deps = [d for d in body["deps"] if d.startswith("skinlesion")]
        needed = _closure([m for c in commands for m in COMMANDS[c]]) - NOT_OUTPUT
        missing = {f for f in needed if not any(f == d or f.startswith(f"{d}/") for d in deps)}
        assert not missing, f"stage {name} lacks deps {sorted(missing)}"
        excess = [d for d in deps if not any(f == d or f.startswith(f"{d}/") for f in needed)]
        assert not excess, f"stage {name} depends on code its command never runs: {excess}"
        stale = [d for d in deps if not (ROOT / d).exists()]
        assert not stale, f"stage {name} names missing deps {stale}"


def test_editing_how_models_are_served_or_run_retrains_nothing():
    """The operations schema (serve, monitor, tune, infra, cluster) is no dependency of a
    training: the training code names the whole ``Params`` for type checkers alone."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("train", "ensemble"):
        assert "skinlesion/config/operations.py" not in stages[name]["do"]["deps"], name
    assert "skinlesion/config/operations.py" not in _closure(COMMANDS["train"])


def _concern(module: str) -> str | None:
    """The sub-package of a ``skinlesion.…`` module name, None for the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else None


def test_the_root_is_small_and_every_concern_says_what_lives_there():
    root_modules = sorted(p.name for p in (ROOT / "skinlesion").glob("*.py"))
    assert len(root_modules) <= MAX_ROOT_MODULES, root_modules
    packages = sorted(p.parent.name for p in (ROOT / "skinlesion").glob("*/__init__.py"))
    assert sorted(LAYERS) == packages
    for name in packages:
        init = ROOT / "skinlesion" / name / "__init__.py"
        assert len(ast.get_docstring(ast.parse(init.read_text())) or "") > 40, init


def test_imports_run_one_way_between_concerns():
    """No arrow runs back up the list of concerns, and the root imports no concern but
    config (so that everything can import the root); ``__main__`` is the command line."""
    wrong = []
    for file in (ROOT / "skinlesion").rglob("*.py"):
        parts = file.relative_to(ROOT / "skinlesion").with_suffix("").parts
        own = "cli" if parts == ("__main__",) else _concern(".".join(("skinlesion", *parts)))
        rank = LAYERS.index(own) if own else LAYERS.index("config")
        for name in _imports(file):
            target = _concern(name) if name.startswith("skinlesion.") else None
            if target and LAYERS.index(target) > rank:
                wrong.append(f"{file.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def _module_name(file: Path) -> str:
    parts = file.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_circles_lazy_imports_included():
    """A circle hidden by a function-level import is still a circle: neither module can be
    understood, tested or moved without the other."""
    graph: dict[str, set[str]] = {}
    for file in (ROOT / "skinlesion").rglob("*.py"):
        targets = {_module_file(n) for n in _imports(file) if n.startswith("skinlesion")}
        graph[_module_name(file)] = {
            _module_name(t) for t in targets if t is not None and t != file
        } - {"skinlesion"}
    circles = []
    for start in sorted(graph):
        stack, seen = [(start, (start,))], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    circles.append(" -> ".join((*path, start)))
                elif nxt not in seen and nxt > start:  # each circle once, from its least name
                    seen.add(nxt)
                    stack.append((nxt, (*path, nxt)))
    assert not circles, "\n".join(circles)


TIERS = {"code", "data", "model", "image"}


def test_every_test_module_has_exactly_one_tier():
    """`make test-fast` selects by marker: a module without its tier would be left out of
    the tier its folder promises (as test_reliability once was)."""
    wrong = []
    for file in sorted((ROOT / "tests").rglob("test_*.py")):
        marks: set[str] = set()
        for node in ast.parse(file.read_text()).body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
            ):
                marks |= {
                    n.attr
                    for n in ast.walk(node.value)
                    if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute)
                    and n.value.attr == "mark"
                }  # fmt: skip
        if len(marks & TIERS) != 1:
            wrong.append(f"{file.relative_to(ROOT)}: {sorted(marks & TIERS) or 'no tier'}")
    assert not wrong, "\n".join(wrong)
