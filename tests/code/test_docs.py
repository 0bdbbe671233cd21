"""The documentation keeps to its sources: typed figures match the files they come from,
results are never typed without one, the steps carry their one numbering, the README
stays short, and the generated pages come from the schema, STEPS and the results."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.code

README_MAX_LINES = 200
# A typed figure names its source: [0.681](results "bench/results/phase3.json: a.b.c").
# The title is a results file (bench/results or reports) and a dotted key in it, then
# optionally "* 100" (a percentage) or "/ 60" (seconds as minutes).
SOURCED = re.compile(r'\[([^\]]+)\]\([^)\s]*\s+"([^":]+\.json): ([\w.\-\[\]]+)((?: [*/] \d+)?)"\)')
# What reads as a result when typed bare in prose: a decimal, a percentage, a duration.
RESULT_LIKE = re.compile(
    r"(?<![\w.\-/])(\d+\.\d+|\d+(?:\.\d+)?\s?%|\d+(?:\.\d+)?\s(?:minutes|seconds|ms|hours))(?![\w./])"
)


def _pages() -> list[Path]:
    docs = [p for p in (ROOT / "docs").rglob("*.md") if "generated" not in p.parts]
    return [ROOT / "README.md", ROOT / "infra" / "README.md", *sorted(docs)]


def _prose(text: str) -> str:
    """``text`` without fenced blocks, inline code and HTML comments: what a reader reads
    as sentences. A line that says why its figure has no file here (``<!-- figure: the
    study's claim -->``) is left out too."""
    text = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.M | re.S)
    text = re.sub(r"<!--(?! figure:).*?-->", "", text, flags=re.S)
    text = re.sub(r"`[^`]*`", "", text)
    return "\n".join(line for line in text.splitlines() if "<!-- figure:" not in line)


def _value(file: str, key: str) -> float:
    node = json.loads((ROOT / file).read_text(encoding="utf-8"))
    for part in re.findall(r"[^.\[\]]+", key):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return float(node)


def _check(figure: str, file: str, key: str, op: str) -> str | None:
    """Why ``figure`` contradicts its source, else None: equal at the figure's precision."""
    number = figure.replace(",", "").replace("%", "").strip()
    try:
        typed = float(number)
    except ValueError:
        return f"{figure!r} is not a number"
    value = _value(file, key)
    if op.strip():
        sign, amount = op.split()
        value = value * float(amount) if sign == "*" else value / float(amount)
    places = len(number.partition(".")[2])
    if round(value, places) != round(typed, places):
        return f"{figure} but {file} {key}{op} is {value:.{places + 2}f}"
    return None


def test_every_typed_figure_matches_its_source():
    wrong, checked = [], 0
    for page in _pages():
        for figure, file, key, op in SOURCED.findall(page.read_text(encoding="utf-8")):
            checked += 1
            if not (ROOT / file).is_file():
                wrong.append(f"{page.name}: {figure} names {file}, which is not there")
                continue
            why = _check(figure, file, key, op)
            if why:
                wrong.append(f"{page.name}: {why}")
    assert checked, "no sourced figure found: the pattern no longer matches the docs"
    assert not wrong, "\n".join(wrong)


def test_no_result_is_typed_without_its_source():
    """A decimal, percentage or duration in prose is a link to the file it comes from (or
    sits in code, where it is a value to type, not a result)."""
    bare = []
    for page in _pages():
        prose = SOURCED.sub("", _prose(page.read_text(encoding="utf-8")))
        for line in prose.splitlines():
            bare += [
                f"{page.relative_to(ROOT)}: {m!r} in: {line.strip()[:90]}"
                for m in RESULT_LIKE.findall(line)
            ]
    assert not bare, "figures without a source:\n" + "\n".join(bare)


def test_the_figure_check_catches_a_contradiction():
    """The check itself: a figure off by one in its last place is refused."""
    result = "bench/results/served_parity.json"
    images = int(_value(result, "images"))
    assert _check(f"{images}", result, "images", "") is None
    assert _check(f"{images + 1}", result, "images", "") is not None
    assert _check("100%", result, "same_decision", " / 12.81") is None


def test_steps_in_the_docs_carry_their_one_number():
    from components import STEPS

    titles = {title.split()[0].lower(): (number, title) for number, title in STEPS.values()}
    wrong = []
    for page in _pages():
        for number, title in re.findall(r"^\s*(\d+)\. \*\*([^*]+)\*\*", page.read_text(), re.M):
            known = [n for n, t in STEPS.values() if title.lower().startswith(t.split()[0].lower())]
            if known and int(number) not in known:
                wrong.append(f"{page.name}: step {number}. {title}, but STEPS says {known}")
    assert titles and not wrong, "\n".join(wrong)


def test_the_readme_is_short_and_opens_with_what_a_newcomer_needs():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    first_screen = " ".join(headings[:6]).lower()
    for wanted in ("set-up", "layout", "change"):
        assert wanted in first_screen, (wanted, headings)


def test_the_generated_pages_come_from_their_sources(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "generate.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    params = (tmp_path / "params.md").read_text()
    from skinlesion.config.params import Params

    for name, field in Params.model_fields.items():
        assert f"## `{field.alias or name}`" in params
    assert "| `serve.port` | int (≥ 1, ≤ 65535) | 5001 |" in params  # type, bounds, value
    steps = (tmp_path / "steps.md").read_text()
    from components import STEPS

    for number, title in STEPS.values():
        assert f"| {number} | {title} |" in steps
    results = (tmp_path / "results.md").read_text()
    for result in (ROOT / "bench" / "results").glob("*.json"):
        assert f"`bench/results/{result.name}`" in results
