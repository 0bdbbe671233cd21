"""`skinlesion upgrade-model`: a version registered before models carried their
preprocessing, registered again as a servable one.

Earlier versions logged the bare Keras network, which takes images already resized the
way training did; the scoring server cannot serve it. This loads such a version with the
crop its training run recorded (skinlesion.evaluation.evaluate), logs it to the same run as the
current kind of model, checks that both give the same probabilities, and registers it as
a new version that carries the old one's tags plus ``upgraded_from``. The aliases of the
old version move to the new one: the same weights, so no gate is needed. Nothing is
deleted; moving an alias back undoes it.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skinlesion.errors import SkinlesionError
from skinlesion.promotion.registry import model_version

log = logging.getLogger(__name__)


class UpgradeError(SkinlesionError, ValueError):
    """The version cannot (or need not) be upgraded; the message says why."""


@dataclass(frozen=True)
class Upgrade:
    name: str
    old_version: str
    new_version: str
    aliases: list[str]
    max_difference: float


def upgrade_model(client: Any, uri: str) -> Upgrade:
    """Register the model version ``uri`` again in the servable form; see the module."""
    import mlflow
    from mlflow.models import get_model_info

    from skinlesion.model.inference import predict_raw
    from skinlesion.model.loading import load_model
    from skinlesion.model.preprocessing import preprocessing_of
    from skinlesion.model.servable import is_serving_model, log_serving_model
    from skinlesion.promotion.registry import create_version, registry_lock

    old = model_version(client, uri)
    pinned = f"models:/{old.name}/{old.version}"
    if is_serving_model(get_model_info(pinned)):
        raise UpgradeError(f"{pinned} already carries its preprocessing; nothing to do")
    model = load_model(pinned)  # wrapped with the crop its run recorded
    size, _ = preprocessing_of(model)
    rng = np.random.default_rng(0)
    probe = rng.integers(0, 256, (4, 150, 200, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        with mlflow.start_run(run_id=old.run_id):
            info = log_serving_model(path, probe[0, :size, :size])
    again = predict_raw(load_model(info.model_uri), probe, None, batch_size=len(probe))
    difference = float(np.abs(again - predict_raw(model, probe, None, len(probe))).max())
    if difference > 1e-5:
        raise UpgradeError(f"the re-logged model differs from {pinned} by {difference:.2g}")
    tags = {**old.tags, "upgraded_from": str(old.version)}
    description = f"version {old.version}, re-registered with its preprocessing inside"
    with registry_lock(client, old.name):
        new = create_version(client, old.name, info.model_uri, old.run_id, tags, description)
        for alias in old.aliases:
            client.set_registered_model_alias(old.name, alias, new.version)
    log.info("%s -> version %s (aliases moved: %s)", pinned, new.version, old.aliases or "none")
    return Upgrade(old.name, str(old.version), str(new.version), list(old.aliases), difference)
