"""Model recipes, registered by name: what ``train.<name>`` in params.yaml trains.

A recipe is a function ``(settings, ctx) -> Fitted``: it builds its model under
``ctx.device.strategy`` and fits it in phases (:mod:`skinlesion.training.fitting`); the
run around it (data, MLflow, provenance, saving) is
:func:`skinlesion.training.lifecycle.train_model`.
Adding a model means one module here, one line in :data:`RECIPES` and its section model
in :data:`skinlesion.config.schema.RECIPE_SETTINGS` (a test keeps the two in step).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from skinlesion.training.fitting import Context, Fitted
from skinlesion.training.recipes import cnn, efficientnet_lite, resnet152v2

Recipe = Callable[[Any, Context], Fitted]

RECIPES: dict[str, Recipe] = {
    "cnn": cnn.fit,
    "resnet152v2": resnet152v2.fit,
    "efficientnet_lite": efficientnet_lite.fit,
}


def recipe(name: str) -> Recipe:
    """The recipe registered as ``name``; a clear error naming the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"no recipe {name!r}; recipes: {', '.join(RECIPES)}") from None
