"""The epoch a training keeps is the one best on validation, not the last one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from skinlesion.training.callbacks import best_keeper

pytestmark = pytest.mark.code


def test_the_keeper_saves_the_best_epoch_and_ignores_later_worse_ones(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    keeper = best_keeper(tmp_path / "best.weights.h5", "val_balanced_accuracy")
    keeper.set_model(model)
    weights = {}
    for epoch, score in enumerate([0.5, 0.7, 0.6, 0.65]):
        model.set_weights([np.full(w.shape, epoch, dtype=w.dtype) for w in model.get_weights()])
        weights[epoch] = model.get_weights()
        keeper.on_epoch_end(epoch, {"val_balanced_accuracy": score, "val_mel_recall": 0.1})
    assert keeper.best_epoch == 1 and keeper.best == pytest.approx(0.7)
    assert keeper.best_logs["val_balanced_accuracy"] == pytest.approx(0.7)
    assert json.loads((tmp_path / "best.weights.json").read_text())["epoch"] == 1
    model.load_weights(tmp_path / "best.weights.h5")
    for kept, best in zip(model.get_weights(), weights[1], strict=True):
        np.testing.assert_array_equal(kept, best)
