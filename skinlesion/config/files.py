"""Reading `params.yaml`, the single source of parameters for DVC, the CLI and KFP.

The file is read here and validated against the schema (:mod:`skinlesion.config.schema`)
by :mod:`skinlesion.config.parse` before any work: :func:`load_params` returns the typed
model. The helpers below act on the plain mapping,
the form DVC writes and a Kubeflow pipeline passes between steps.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from skinlesion.config.params import Params
from skinlesion.config.parse import parse_params, parse_sections
from skinlesion.config.schema import ParamsError, deep_merge

PARAMS_ENV = "SKINLESION_PARAMS"
# What a pipeline's first step hands the others: the sections some step reads, and the
# hash of the whole params (components/read_params).
STEP_SECTIONS = (
    "data",
    "validate",
    "split",
    "eda",
    "oversample",
    "input",
    "tracking",
    "train",
    "evaluate",
    "compare",
    "promote",
    "tune",
    "monitor",
    "params_hash",
)
DEFAULT_PARAMS_FILE = "params.yaml"

__all__ = ["Params", "ParamsError", "load_params", "read_params"]


def params_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Where params come from: the argument, else $SKINLESION_PARAMS, else ./params.yaml."""
    return Path(path or os.environ.get(PARAMS_ENV) or DEFAULT_PARAMS_FILE)


def read_params(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The params file as a plain mapping; a clear error when it is absent or not a mapping."""
    file = params_path(path)
    if not file.is_file():
        raise ParamsError(
            f"params file not found: {file} (run from the project root, pass --params, "
            f"or set {PARAMS_ENV})"
        )
    with file.open(encoding="utf-8") as fh:
        params = yaml.safe_load(fh) or {}
    if not isinstance(params, dict):
        raise ParamsError(f"{file} must hold a mapping of stage sections")
    return params


def load_params(path: str | os.PathLike[str] | None = None) -> Params:
    """The params file, validated: any unknown key or bad value stops here, by path."""
    file = params_path(path)
    return parse_params(read_params(file), str(file))


def set_dotted(params: Mapping[str, Any], assignment: str) -> dict[str, Any]:
    """A copy of ``params`` with one ``section.key=value`` assignment applied, the way
    ``dvc exp run -S`` takes them; the value is parsed as YAML (numbers, lists, booleans)."""
    if "=" not in assignment:
        raise ParamsError(f"expected KEY=VALUE, got {assignment!r}")
    dotted, raw = assignment.split("=", 1)
    keys = [k for k in dotted.strip().split(".") if k]
    if not keys:
        raise ParamsError(f"expected KEY=VALUE, got {assignment!r}")
    node: Any = params
    for depth, key in enumerate(keys[:-1]):
        node = node.get(key) if isinstance(node, Mapping) else None
        if not isinstance(node, Mapping):
            raise ParamsError(f"{'.'.join(keys[: depth + 1])} is not a section of params")
    if keys[-1] not in node:
        raise ParamsError(f"unknown parameter {dotted} (not in params.yaml)")
    update: Any = yaml.safe_load(raw)
    for key in reversed(keys):
        update = {key: update}
    return deep_merge(params, update)


def to_pipeline(params: Params) -> str:
    """``params`` as a Kubeflow pipeline parameter: JSON text, which keeps every type.

    A mapping would travel as a protobuf Struct, whose numbers are all doubles: a search
    range ``{low: 1.0, high: 3.0}`` and ``{low: 1, high: 3}`` would arrive alike, one of
    them with the wrong kind (continuous or integer). Text arrives as it was sent."""
    return json.dumps(params.raw(), sort_keys=True)


def read_pipeline_params(text: str) -> Params:
    """The run's whole params from a pipeline parameter (JSON text), validated."""
    origin = "pipeline parameter `params`"
    return parse_params(_json(text, origin), origin)


def pipeline_sections(text: str) -> dict[str, str]:
    """What the first step of a pipeline hands the others: the run's params validated as a
    whole (every problem at once, before any work), then each section as JSON text of its
    own, and ``params_hash``, the hash of the whole (provenance needs it; no step but
    this one sees every section)."""
    params = read_pipeline_params(text)
    sections = {name: json.dumps(value, sort_keys=True) for name, value in params.raw().items()}
    return {**sections, "params_hash": params.hash()}


def from_pipeline(**sections: str) -> Params:
    """The sections a Kubeflow step receives (JSON text each), validated: a
    :class:`Params` holding those sections and no other."""
    raw = {name: _json(text, f"pipeline input `{name}`") for name, text in sections.items()}
    return parse_sections(raw, "pipeline inputs " + ", ".join(sections))


def _json(text: str, origin: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ParamsError(f"{origin} is not JSON: {err}") from err


def apply_values(path: str | os.PathLike[str], values: Mapping[str, Any]) -> list[str]:
    """Write ``values`` (dotted key -> value, e.g. a search's best) into the params file,
    keeping its comments and layout; the result is validated before anything is written.
    Returns what changed, as ``key: old -> new`` lines."""
    from ruamel.yaml import YAML

    file = params_path(path)
    raw = read_params(file)
    for key, value in values.items():
        raw = set_dotted(raw, f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}")
    parse_params(raw, f"{file} with the new values")
    editor = YAML()  # round-trip mode: comments, order and flow style survive
    editor.preserve_quotes = True
    editor.width = 100
    document = editor.load(file.read_text(encoding="utf-8"))
    changes = []
    for key, value in values.items():
        *parents, last = key.split(".")
        node = document
        for part in parents:
            node = node[part]
        if node[last] != value:
            changes.append(f"{key}: {node[last]!r} -> {value!r}")
            node[last] = _flow(value)
    with file.open("w", encoding="utf-8") as fh:
        editor.dump(document, fh)
    return changes


def _flow(value: Any) -> Any:
    """Lists written inline, like the rest of params.yaml."""
    if isinstance(value, list):
        from ruamel.yaml.comments import CommentedSeq

        seq = CommentedSeq(_flow(v) for v in value)
        seq.fa.set_flow_style()
        return seq
    return value
