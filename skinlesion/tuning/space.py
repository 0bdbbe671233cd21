"""A search space from params.yaml (``tune.<model>.space``) and the values of one trial:
what Optuna is asked for, and how a trial's values become validated params.

Kept apart from the search itself (``skinlesion.tuning.study``) because it needs no Optuna study
and no training: the code tests check it alone."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skinlesion.config.operations import Dimension
from skinlesion.config.parse import revalidate
from skinlesion.config.schema import deep_merge

if TYPE_CHECKING:
    from skinlesion.config.params import Params

log = logging.getLogger(__name__)


def encode(value: Any) -> Any:
    """A choice as Optuna stores it: scalars as they are, lists as JSON text."""
    return (
        value if value is None or isinstance(value, bool | int | float | str) else json.dumps(value)
    )


def decode(value: Any, dimension: Dimension) -> Any:
    if dimension.choices is not None and isinstance(value, str):
        for choice in dimension.choices:
            if encode(choice) == value:
                return choice
    return value


def suggest(trial: Any, space: Mapping[str, Dimension]) -> dict[str, Any]:
    """The trial's value of every searched key, as params values."""
    values: dict[str, Any] = {}
    for key, dim in space.items():
        if dim.choices is not None:
            picked = trial.suggest_categorical(key, [encode(c) for c in dim.choices])
            values[key] = decode(picked, dim)
        elif dim.integer:
            values[key] = trial.suggest_int(
                key, int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log
            )
        else:
            values[key] = trial.suggest_float(
                key, float(dim.low), float(dim.high), step=dim.step, log=dim.log
            )
    return values


def current_values(params: Params, space: Mapping[str, Dimension]) -> dict[str, Any] | None:
    """The params.yaml value of each searched key, encoded as a trial; None when one lies
    outside its dimension (the baseline cannot then be a trial of this space)."""
    raw = params.raw()
    values: dict[str, Any] = {}
    for key, dim in space.items():
        value = value_at(raw, key)
        inside = (
            encode(value) in [encode(c) for c in dim.choices]
            if dim.choices is not None
            else dim.low <= value <= dim.high  # type: ignore[operator]
        )
        if not inside:
            log.warning("baseline skipped: %s = %r lies outside the space", key, value)
            return None
        values[key] = encode(value)
    return values


def with_values(params: Params, values: Mapping[str, Any], work_dir: Path | None = None) -> Params:
    """``params`` with a trial's values (dotted keys), validated like params.yaml. With a
    ``work_dir`` (a trial), training gets its own checkpoint folder there and no S3 mirror:
    a trial that dies is retried from its start."""
    if work_dir is not None:
        values = {
            **values,
            "train.checkpoint_dir": str(work_dir / "checkpoints"),
            "train.checkpoint_uri": "",
        }
    update: dict[str, Any] = {}
    for key, value in values.items():
        node = update
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return revalidate(params, deep_merge(params.raw(), update), "trial values")


def value_at(raw: Mapping[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        node = node[part]
    return node
