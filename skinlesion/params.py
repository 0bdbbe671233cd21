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
