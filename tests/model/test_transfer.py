"""The transfer recipe (EfficientNet-Lite0 from the packaged ImageNet weights) on the
synthetic workspace: it learns, each phase trains only what it should, frozen parts are
computed once per phase, and a phase that does not help is undone."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from skinlesion.model.efficientnet_lite import build_trunk, stage_of
from skinlesion.training.frozen import frozen_outputs
from skinlesion.training.recipes import efficientnet_lite as recipe
from tests.helpers import train_argmax

pytestmark = pytest.mark.model

# A head that learns within seconds on the synthetic set (its classes differ by colour).
SHORT = {"image_size": 32, "head_epochs": 6, "head_lr": 0.01, "early_stopping_patience": 6}


def _train(workspace: Path, params: dict, tmp_path: Path, **settings):
    return train_argmax(
        workspace, params, tmp_path, "efficientnet_lite", tmp_path / "m.keras", tmp_path / "r",
        **{**SHORT, **settings},
    )  # fmt: skip


def _trunk_weights(model) -> dict[str, list[np.ndarray]]:
    """The weights of each layer of the trunk, wherever the saved model nests it."""
    for layer in model.layers:
        if layer.name == "efficientnet_lite0_trunk":
            return {inner.name: inner.get_weights() for inner in layer.layers if inner.weights}
        if hasattr(layer, "layers"):
            found = _trunk_weights(layer)
            if found:
                return found
    return {}


def test_from_imagenet_weights_it_learns_training_only_the_top_stages(
    train_workspace, params, tmp_path, monkeypatch
):
    """Head, then the top two stages, on CPU from cached frozen outputs: validation
    balanced accuracy well above chance; stages 1-5 and every batch norm still hold the
    ImageNet weights, stages 6-7 and the head conv moved; the frozen stages were computed
    once per run, not once per epoch."""
    calls = []

    def counting(extractor, images, batch_size, desc):
        calls.append(desc)
        return frozen_outputs(extractor, images, batch_size, desc)

    monkeypatch.setattr(recipe, "frozen_outputs", counting)
    result = _train(
        train_workspace, params, tmp_path, fine_tune_stages=2, fine_tune_epochs=3, fine_tune_lr=1e-3
    )
    assert result.val_balanced_accuracy > 0.4  # chance is 1/7
    # the lower stages ran once over the images; the head's pooled features came from
    # their output through the (then frozen) top stages: once per run, not per epoch
    assert calls == ["frozen stages", "trunk features"]

    trained = _trunk_weights(keras.models.load_model(tmp_path / "m.keras"))
    imagenet = {
        layer.name: layer.get_weights()
        for layer in build_trunk("lite0", "imagenet", 32).layers
        if layer.weights
    }
    moved = {
        name
        for name, weights in imagenet.items()
        if any(not np.array_equal(a, b) for a, b in zip(weights, trained[name], strict=True))
    }
    assert moved, "fine-tuning changed nothing"
    assert all(stage_of(name) >= 6 for name in moved), sorted(moved)[:5]
    assert not any(name.endswith("_bn") for name in moved)  # statistics stay ImageNet's
    history = pd.read_csv(tmp_path / "r/history.csv")
    assert len(history) == result.epochs_run > SHORT["head_epochs"] - 1


def test_a_phase_that_does_not_help_is_undone(train_workspace, params, tmp_path, caplog):
    """Fine-tuning at a learning rate that wrecks the weights: validation says it did not
    beat the head, so the saved model is the head's, with the trunk as converted."""
    caplog.set_level("INFO")
    result = _train(train_workspace, params, tmp_path, fine_tune_epochs=1, fine_tune_lr=50.0)
    history = pd.read_csv(tmp_path / "r/history.csv")
    head_best = history["val_balanced_accuracy"].iloc[:-1].max()
    assert history["val_balanced_accuracy"].iloc[-1] < head_best
    assert "phase top did not beat the best before it" in caplog.text
    assert result.val_balanced_accuracy == pytest.approx(head_best)
    trained = _trunk_weights(keras.models.load_model(tmp_path / "m.keras"))
    imagenet = [layer for layer in build_trunk("lite0", "imagenet", 32).layers if layer.weights]
    assert set(trained) == {layer.name for layer in imagenet}
    for layer in imagenet:
        for a, b in zip(layer.get_weights(), trained[layer.name], strict=True):
            np.testing.assert_array_equal(a, b)
