"""Decision offsets tuned on validation predictions."""

from __future__ import annotations

import numpy as np
import pytest

from skinlesion.decision import fit_class_offsets

pytestmark = pytest.mark.code


def test_offsets_recover_a_rare_class_the_argmax_misses():
    labels = np.array([0] * 90 + [1] * 10)
    probs = np.tile([0.7, 0.3], (100, 1))
    probs[labels == 1] = [0.55, 0.45]  # ranked right, but below the argmax threshold
    offsets, before, after = fit_class_offsets(probs, labels)
    assert before == pytest.approx(0.5)
    assert after == pytest.approx(1.0)
    assert offsets[1] - offsets[0] > 0


def test_no_change_when_argmax_is_already_best():
    probs = np.eye(3)[[0, 1, 2, 0, 1, 2]] * 0.9 + 0.05
    labels = np.array([0, 1, 2, 0, 1, 2])
    offsets, before, after = fit_class_offsets(probs, labels)
    assert before == after == 1.0
    assert not offsets.any()


def test_a_recall_floor_is_met_at_some_cost_in_balanced_accuracy():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 50 + [1] * 50)
    score = np.where(labels == 1, rng.uniform(0.3, 0.9, 100), rng.uniform(0.1, 0.7, 100))
    probs = np.stack([1 - score, score], axis=1)
    free, _, best = fit_class_offsets(probs, labels)
    floored, _, after = fit_class_offsets(probs, labels, min_recall={1: 0.95})

    def recall(offsets: np.ndarray) -> float:
        return float(((np.log(probs) + offsets).argmax(axis=1)[labels == 1] == 1).mean())

    assert recall(free) < 0.95 <= recall(floored)
    assert after <= best


def test_offsets_folded_into_the_softmax_bias_shift_log_probabilities():
    import keras

    from skinlesion.models import build_cnn, shift_decisions

    cfg = {"filters": [4], "convs_per_block": 1, "dense_units": 4, "dropout": 0.0}
    model = build_cnn(cfg, 16)
    x = keras.random.uniform((5, 16, 16, 3), seed=1).numpy() * 255
    before = model.predict(x, verbose=0)
    offsets = np.array([0.5, -0.2, 0.0, 1.0, 0.0, -1.0, 0.3])
    after = shift_decisions(model, offsets.tolist()).predict(x, verbose=0)
    expected = np.exp(np.log(before) + offsets)
    np.testing.assert_allclose(
        after, expected / expected.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-6
    )
