"""Reading `params.yaml`, the single source of parameters for DVC, the CLI and KFP.

The file is read here and validated by :mod:`skinlesion.config.schema` before any work:
:func:`load_params` returns the typed model. The helpers below act on the plain mapping,
the form DVC writes and a Kubeflow pipeline passes between steps.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from skinlesion.config.parse import parse_params
from skinlesion.config.schema import Params, ParamsError, deep_merge

PARAMS_ENV = "SKINLESION_PARAMS"
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


def from_pipeline(params: Mapping[str, Any]) -> Params:
    """``params`` as a Kubeflow step receives them, validated like params.yaml.

    A pipeline passes a mapping as a protobuf Struct, whose numbers are all doubles: the
    ``epochs: 25`` of params.yaml arrives as ``25.0``. Whole numbers become ints again."""

    def restore(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: restore(v) for k, v in value.items()}
        if isinstance(value, list):
            return [restore(v) for v in value]
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    return parse_params(restore(dict(params)), "pipeline parameter `params`")


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
