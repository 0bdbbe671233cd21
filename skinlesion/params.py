"""Loading `params.yaml`, the single source of parameters for DVC, the CLI and KFP."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from skinlesion.errors import SkinlesionError

PARAMS_ENV = "SKINLESION_PARAMS"
DEFAULT_PARAMS_FILE = "params.yaml"


class ParamsError(SkinlesionError, ValueError):
    """params.yaml is missing or lacks a section that a stage needs."""


def params_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Where params come from: the argument, else $SKINLESION_PARAMS, else ./params.yaml."""
    return Path(path or os.environ.get(PARAMS_ENV) or DEFAULT_PARAMS_FILE)


def load_params(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Read the whole params file; a clear error when it is absent or not a mapping."""
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


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    """One stage's section, failing loudly when it is missing."""
    value = params.get(name)
    if not isinstance(value, dict):
        raise ParamsError(f"params file has no '{name}' section")
    return value


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``overrides`` merged in, mapping by mapping."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def cluster_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a Kubeflow run: every stage section with ``cluster.overrides``
    merged over it (the ``cluster`` section itself configures the pipeline, not a step)."""
    overrides = section(params, "cluster").get("overrides") or {}
    stages = {k: v for k, v in params.items() if k != "cluster"}
    return deep_merge(stages, overrides)


def set_dotted(params: dict[str, Any], assignment: str) -> dict[str, Any]:
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
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise ParamsError(f"{'.'.join(keys[: depth + 1])} is not a section of params")
    if keys[-1] not in node:
        raise ParamsError(f"unknown parameter {dotted} (not in params.yaml)")
    update: Any = yaml.safe_load(raw)
    for key in reversed(keys):
        update = {key: update}
    return deep_merge(params, update)


def from_pipeline(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as a Kubeflow step receives them, made equal to params.yaml again.

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

    return restore(params)
