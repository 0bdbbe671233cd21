"""Writes the documentation site's generated pages (``make docs`` runs it before MkDocs).

Why generated: a page typed by hand drifts from what it describes. The parameters reference
is read from the pydantic schema and ``params.yaml`` (every key, its type and bounds, its
value and comment); the steps page from ``components.STEPS``, ``dvc.yaml`` and the
pipelines; the results page from the committed reports of the last ``dvc repro`` and from
``bench/results/*.json``. Editing any of those changes the site at its next build, and
nothing else can.

    python docs/generate.py            # writes docs/generated/*.md
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "generated"
PIPELINES = {
    "training": "training_pipeline.py",
    "tuning": "tuning_pipeline.py",
    "batch scoring": "scoring_pipeline.py",
    "monitoring": "monitoring_pipeline.py",
}
# The pipelines that can run the training pipeline inside themselves, and when.
NESTED = {"tuning": "with train_best", "monitoring": "on drift, to retrain"}
# A results file's leaves shown at most; long lists (epochs, trials, runs) are left out.
MAX_ROWS = 40
MAX_LIST = 7


def cell(value: Any) -> str:
    """A value as one Markdown table cell: YAML flow style, pipes escaped."""
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, str):
        text = value if value else '""'
    else:
        text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
        text = text.removesuffix("...").strip()
    return text.replace("|", "\\|").replace("\n", " ")


# --- the parameters reference -------------------------------------------------------------


def yaml_comments(text: str) -> dict[str, str]:
    """Each dotted key of a YAML file -> its comment: the text after ``#`` on its line,
    the comment lines that continue it in the same column, and a block of comment lines
    just above it (or just under a section's header, for the section)."""
    comments: dict[str, list[str]] = {}
    stack: list[tuple[int, str]] = []
    block: list[str] = []
    last: str | None = None  # the key whose comment a line in `column` continues
    column: int | None = None
    header: str | None = None  # a section header just above: its block comment
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            block, last, column, header = [], None, None, None
            continue
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("#"):
            words = stripped.lstrip("#").strip()
            if last is not None and line.index("#") == column:
                comments[last].append(words)
            elif header is not None:
                comments[header].append(words)
            else:
                block.append(words)
            continue
        match = re.match(r"^(\s*)([\w.\-]+):(.*)$", line)
        if match is None:  # a list item
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = ".".join([k for _, k in stack] + [match[2]])
        rest = match[3]
        hash_at = rest.find(" #")
        value = rest[:hash_at] if hash_at >= 0 else rest
        comments[key] = [*block, *([rest[hash_at + 2 :].strip()] if hash_at >= 0 else [])]
        block = []
        last = key
        column = len(match[1]) + len(match[2]) + 2 + hash_at if hash_at >= 0 else None
        header = key if not value.strip() and hash_at < 0 else None
        stack.append((indent, match[2]))
    return {key: " ".join(lines).strip() for key, lines in comments.items()}


def _unwrap(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        models = [a for a in typing.get_args(annotation) if isinstance(a, type)]
        return next((a for a in models if issubclass(a, BaseModel)), annotation)
    return annotation


_SIGNS = (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))


def _bounds(metadata: list[Any]) -> str:
    found = [
        f"{sign} {getattr(m, a)}"
        for m in metadata
        for a, sign in _SIGNS
        if getattr(m, a, None) is not None
    ]
    return f" ({', '.join(found)})" if found else ""


def _pretty(annotation: Any) -> str:
    """An annotation in words: ``a | b`` for literals and unions, generics spelt out,
    the bounds of an ``Annotated`` type after it."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(f"`{a}`" for a in args)
    if origin is typing.Annotated:
        inner = _pretty(args[0])
        metadata = [m for a in args[1:] for m in getattr(a, "metadata", [a])]
        return inner + _bounds(metadata)
    if origin in (types.UnionType, typing.Union):
        return " | ".join(_pretty(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_pretty(a) for a in args)}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def type_text(field: Any) -> str:
    """A field's type in words: the annotation, literals listed, then its bounds."""
    return (_pretty(field.annotation) + _bounds(field.metadata)).replace("|", "\\|")


def _extra_model(section: str, key: str, value: Any) -> type[BaseModel] | None:
    """The model of a key a section allows besides its fields: a model section under
    ``train`` (its recipe's settings) or a tuned model under ``tune``."""
    from skinlesion.config.operations import TuneModelSettings
    from skinlesion.config.schema import RECIPE_SETTINGS

    if section == "train" and isinstance(value, Mapping):
        return RECIPE_SETTINGS.get(str(value.get("recipe") or key))
    if section == "tune" and isinstance(value, Mapping):
        return TuneModelSettings
    return None


def param_rows(
    model: type[BaseModel], raw: Any, prefix: str, comments: dict[str, str]
) -> Iterator[tuple[str, str, str, str]]:
    """(key, type, value in params.yaml, comment) of every key under ``model``."""
    raw = raw if isinstance(raw, Mapping) else {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        path = f"{prefix}{key}"
        inner = _unwrap(field.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            yield path, "section", "", comments.get(path, "")
            yield from param_rows(inner, raw.get(key), f"{path}.", comments)
        else:
            value = raw.get(key)
            shown = (
                "see params.yaml"
                if isinstance(value, Mapping) and len(cell(value)) > 60
                else cell(value)
            )
            yield path, type_text(field), shown, comments.get(path, "")
    for key, value in raw.items():
        if key in {f.alias or n for n, f in model.model_fields.items()}:
            continue
        extra = _extra_model(prefix.rstrip("."), key, value)
        if extra is not None:
            path = f"{prefix}{key}"
            kind = "model section" if extra.__name__ != "TuneModelSettings" else "tuned model"
            yield path, f"{kind} ({extra.__name__})", "", comments.get(path, "")
            yield from param_rows(extra, value, f"{path}.", comments)


def params_page() -> str:
    """Every key of params.yaml with its type, bounds, value and comment, by section."""
    from skinlesion.config.params import NOT_HASHED, Params

    text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    comments = yaml_comments(text)
    out = [
        "# Parameters",
        "",
        "Generated from the schema (`skinlesion/config/schema.py`, `operations.py`) and",
        "`params.yaml` by `docs/generate.py`: every key, its type and bounds, its value in",
        "`params.yaml` and the comment beside it. `params.yaml` is the one source of",
        "parameters for DVC, the CLI and Kubeflow; a key that is not here is refused by name.",
        f"Sections {', '.join(f'`{s}`' for s in NOT_HASHED)} say where and how models run,",
        "are served, watched or searched: they are left out of a model's params hash, and no",
        "training stage depends on them.",
        "",
    ]
    for name, field in Params.model_fields.items():
        section = field.alias or name
        out += [f"## `{section}`", ""]
        if comments.get(section):
            out += [comments[section], ""]
        out += ["| key | type | value | what it does |", "|---|---|---|---|"]
        model = _unwrap(field.annotation)
        for key, kind, value, comment in param_rows(
            model, raw.get(section), f"{section}.", comments
        ):
            escaped = comment.replace("|", "\\|")
            out.append(f"| `{key}` | {kind} | {value} | {escaped} |")
        out.append("")
    return "\n".join(out)


# --- the steps ----------------------------------------------------------------------------


def _steps_of(file: str) -> set[str]:
    """The component folders a pipeline module names a task after (its data preparation
    sub-pipeline's included)."""
    source = (ROOT / "pipelines" / file).read_text()
    if "build_data_preparation" in source:
        source += (ROOT / "pipelines" / "data_preparation.py").read_text()
    return set(re.findall(r'step_title\(\s*"(\w+)"', source))


def steps_page() -> str:
    """The one numbering of the steps, with where each runs."""
    from components import STEPS

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    used = {name: _steps_of(file) for name, file in PIPELINES.items()}
    runs_in: dict[str, list[str]] = {folder: [] for folder in STEPS}
    for pipeline, steps in used.items():
        nested = (
            "from pipelines.training_pipeline import"
            in (ROOT / "pipelines" / PIPELINES[pipeline]).read_text()
        )
        for folder in STEPS:
            if folder in steps:
                runs_in[folder].append(pipeline)
            elif nested and folder in used["training"]:
                runs_in[folder].append(f"{pipeline} ({NESTED[pipeline]})")
    out = [
        "# Steps",
        "",
        "Generated from `components.STEPS` by `docs/generate.py`: the one numbering of the",
        "project's steps, in the order a training run takes them. The KFP display names, the",
        "pipelines' docstrings, each component's README and the DVC stages use it.",
        "",
        "| step | title | component | DVC stage | Kubeflow pipelines |",
        "|---:|---|---|---|---|",
    ]
    for folder, (number, title) in STEPS.items():
        stage = f"`{folder}`" if folder in stages else "—"
        pipelines = ", ".join(runs_in[folder]) or "—"
        out.append(f"| {number} | {title} | `components/{folder}` | {stage} | {pipelines} |")
    return "\n".join(out) + "\n"


# --- the results --------------------------------------------------------------------------


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _ci(values: list[float]) -> str:
    return f"{values[0]:.3f}-{values[1]:.3f}"


def flow_section() -> list[str]:
    """The candidates of the last `dvc repro`, from the committed reports."""
    candidates = sorted(p.name for p in (ROOT / "reports" / "eval").iterdir() if p.is_dir())
    decision = _read(ROOT / "reports" / "promotion" / "decision.json")
    out = [
        "## The flow's candidates",
        "",
        "The lesion-disjoint test part of the last `dvc repro` (default `params.yaml`), from",
        "`reports/eval/*/metrics.json` (intervals over lesions) and `reports/train/*/metrics.json`",
        "(validation, which chooses). Only the promotion gate reads test, once per candidate.",
        "",
        "| candidate | test images | balanced accuracy (95% CI) | macro AUC | melanoma sensitivity"
        " (95% CI) | melanoma specificity | coverage (95% CI) | mean set size | single-class |"
        " referred | validation balanced accuracy | validation referred |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    recall_rows, coverage_rows = [], []
    for name in candidates:
        m = _read(ROOT / "reports" / "eval" / name / "metrics.json")
        t = _read(ROOT / "reports" / "train" / name / "metrics.json")
        c, ci = m.get("conformal", {}), m.get("ci95", {})
        out.append(
            f"| {name} | {m['n_images']} | {m['balanced_accuracy']:.3f}"
            f" ({_ci(ci['balanced_accuracy'])}) | {m['macro_auc']:.3f} |"
            f" {m['melanoma']['sensitivity']:.3f} ({_ci(ci['melanoma_sensitivity'])}) |"
            f" {m['melanoma']['specificity']:.3f} | {c['coverage']:.3f}"
            f" ({_ci(c['coverage_ci95'])}) | {c['set_size_mean']:.2f} |"
            f" {_pct(c['singleton_share'])} | {_pct(c['refer_rate'])} |"
            f" {t['val_balanced_accuracy']:.3f} | {_pct(t['val_refer_rate'])} |"
        )
        recall_rows.append(
            f"| {name} | " + " | ".join(f"{m['recall'][k]:.2f}" for k in m["classes"]) + " |"
        )
        coverage_rows.append(
            f"| {name} | "
            + " | ".join(f"{c['coverage_by_class'][k]:.2f}" for k in m["classes"])
            + " |"
        )
    classes = _read(ROOT / "reports" / "eval" / candidates[0] / "metrics.json")["classes"]
    header = "| candidate | " + " | ".join(classes) + " |"
    rule = "|---|" + "---:|" * len(classes)
    out += ["", "Recall per class on test:", "", header, rule, *recall_rows]
    out += ["", "Conformal coverage per class on test:", "", header, rule, *coverage_rows, ""]
    champion = decision.get("champion") or decision.get("challenger")
    out += [
        f"Promotion (`reports/promotion/decision.json`): challenger `{decision.get('challenger')}`;"
        f" champion after the run: `{champion}`. {decision.get('reason', '')}".strip(),
        "",
    ]
    return out


def reading_section() -> list[str]:
    """What the figures say, in sentences whose figures are read from the files."""
    decision = _read(ROOT / "reports" / "promotion" / "decision.json")
    chosen = decision.get("challenger")
    train = {
        p.parent.name: _read(p) for p in sorted((ROOT / "reports" / "train").glob("*/metrics.json"))
    }
    others = ", ".join(
        f"{_pct(t['val_refer_rate'])} ({name})" for name, t in train.items() if name != chosen
    )
    test = _read(ROOT / "reports" / "eval" / chosen / "metrics.json")["conformal"]
    out = [
        "## How to read them",
        "",
        f"- **The choice is made on validation.** `promote.primary_metric` chose `{chosen}`: it"
        f" referred {_pct(train[chosen]['val_refer_rate'])} of validation images, against"
        f" {others}.",
        f"- **The sets keep their promise.** On test, `{chosen}`'s sets cover"
        f" {test['coverage']:.3f} of images at `alpha` {test['alpha']}; it answered"
        f" {test['answered']} images without referral, {_pct(test['answered_accuracy'])} of"
        " them correctly, and referred the rest, mostly because melanoma could not be ruled"
        " out. A model that ranks better narrows the sets and refers fewer patients.",
    ]
    phase3 = ROOT / "bench" / "results" / "phase3.json"
    if phase3.is_file():
        recipes = _read(phase3)["recipes"]
        cpu, cluster = recipes["cpu_default"], recipes["cluster_phase3"]
        out.append(
            "- **The cluster's recipe does better** (`bench/results/phase3.json`, Lite0 on 2"
            f" CPU cores at {_read(phase3)['image_size']} px): validation balanced accuracy"
            f" {cpu['selected']['val_balanced_accuracy']:.3f} for the CPU default against"
            f" {cluster['selected']['val_balanced_accuracy']:.3f}; on test, read once for each,"
            f" {cpu['test']['balanced_accuracy']:.3f} against"
            f" {cluster['test']['balanced_accuracy']:.3f} (macro AUC"
            f" {cpu['test']['macro_auc']:.3f} against {cluster['test']['macro_auc']:.3f}), in"
            f" {cpu['train_minutes']:.0f} against {cluster['train_minutes']:.0f} minutes of CPU"
            " training."
        )
    out += [
        "- **One split is uncertain.** With few test images in the rarest classes, judge a"
        " change on validation over several seeds (the intervals above), not on one test"
        " figure; the test part is read once per adopted configuration.",
        "",
    ]
    return out


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _flatten(inner, f"{prefix}{key}.")
    elif isinstance(value, list):
        if len(value) <= MAX_LIST and all(not isinstance(v, Mapping | list) for v in value):
            yield prefix.rstrip("."), value
        elif len(value) <= MAX_LIST:
            for index, inner in enumerate(value):
                yield from _flatten(inner, f"{prefix}{index}.")
    else:
        yield prefix.rstrip("."), value


def _script_of(result: Path) -> Path | None:
    stem = result.stem.split("-")[0]
    script = ROOT / "bench" / f"{stem}.py"
    return script if script.is_file() else None


def bench_section(result: Path) -> list[str]:
    """One benchmark's figures: what its script measures (its docstring's first
    paragraph), then every scalar it wrote."""
    script = _script_of(result)
    about = ""
    if script is not None:
        doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
        about = re.split(r" (?:Writes|Example)\b", doc.split("\n\n")[0].replace("\n", " "))[0]
    rows = [(k, v) for k, v in _flatten(_read(result)) if k]
    shown = rows[:MAX_ROWS]
    out = [f"### `{result.relative_to(ROOT)}`", ""]
    if about:
        out += [f"{about} (`{script.relative_to(ROOT)}`)", ""]
    out += ["| figure | value |", "|---|---|"]
    out += [f"| `{key}` | {cell(value)} |" for key, value in shown]
    if len(rows) > len(shown):
        out += ["", f"{len(rows) - len(shown)} more figures in the file."]
    return [*out, ""]


def results_page() -> str:
    out = [
        "# Results",
        "",
        "Generated by `docs/generate.py` from the reports of the last `dvc repro` committed",
        "with the code (`reports/`, `dvc.lock`) and from the benchmarks' results",
        "(`bench/results/*.json`, each written by the script of its name). Figures elsewhere",
        "in these docs come from these files, and `tests/code/test_docs.py` checks them.",
        "Hosts differ a lot: compare timings only as ratios within one file.",
        "",
        *flow_section(),
        *reading_section(),
        "## Benchmarks",
        "",
    ]
    for result in sorted((ROOT / "bench" / "results").glob("*.json")):
        out += bench_section(result)
    return "\n".join(out)


def infra_page() -> str:
    """``infra/README.md``, the install guide that lives beside the manifests, as a page."""
    text = (ROOT / "infra" / "README.md").read_text(encoding="utf-8")
    note = "\n\n*This page is `infra/README.md`, kept beside the manifests it describes.*\n"
    title, _, rest = text.partition("\n")
    return f"{title}{note}{rest}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="where the pages go")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pages = {
        "params.md": params_page(),
        "steps.md": steps_page(),
        "results.md": results_page(),
        "infra.md": infra_page(),
    }
    for name, text in pages.items():
        (args.out / name).write_text(text, encoding="utf-8")
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
