"""The decision operating point (recall floors) set on validation predictions."""

from __future__ import annotations

import numpy as np
import pytest

from skinlesion.training.operating_point import fit_recall_floors, offset_grid

GRID = offset_grid(4.0, 0.05)

pytestmark = pytest.mark.code


def test_a_floor_is_met_with_the_smallest_offset_on_that_class_only():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 50 + [1] * 50 + [2] * 50)
    probs = rng.dirichlet([1, 1, 1], 150)
    probs[labels == 1, 1] += 0.2  # class 1 ranked a little higher where it is true
    probs /= probs.sum(axis=1, keepdims=True)
    offsets, _, _ = fit_recall_floors(probs, labels, {1: 0.9}, GRID)

    def recall(o: np.ndarray) -> float:
        return float(((np.log(probs) + o).argmax(axis=1)[labels == 1] == 1).mean())

    assert offsets[0] == offsets[2] == 0 and offsets[1] > 0
    assert recall(offsets) >= 0.9
    smaller = offsets.copy()
    smaller[1] -= 0.05
    assert recall(smaller) < 0.9


def test_no_shift_when_the_floor_already_holds_or_is_off():
    probs = np.eye(3)[[0, 1, 2, 0, 1, 2]] * 0.9 + 0.05
    labels = np.array([0, 1, 2, 0, 1, 2])
    for floors in ({1: 0.8}, {1: 0.0}, {}):
        offsets, before, after = fit_recall_floors(probs, labels, floors, GRID)
        assert before == after == 1.0 and not offsets.any()


def test_a_floor_on_a_class_absent_from_validation_is_ignored():
    probs = np.array([[0.8, 0.2, 0.0], [0.3, 0.7, 0.0]])
    offsets, _, _ = fit_recall_floors(probs, np.array([0, 1]), {2: 0.9}, GRID)
    assert not offsets.any()


def test_offsets_folded_into_the_softmax_bias_shift_log_probabilities():
    import keras

    from skinlesion.config.files import load_params
    from skinlesion.model.networks import build_cnn, shift_decisions
    from tests.helpers import ROOT

    cnn = load_params(ROOT / "params.yaml").train.model("cnn")
    model = build_cnn(cnn.model_copy(update={"filters": [4], "dense_units": 4}), 16)
    x = keras.random.uniform((5, 16, 16, 3), seed=1).numpy() * 255
    before = model.predict(x, verbose=0)
    offsets = np.array([0.5, -0.2, 0.0, 1.0, 0.0, -1.0, 0.3])
    after = shift_decisions(model, offsets.tolist()).predict(x, verbose=0)
    expected = np.exp(np.log(before) + offsets)
    np.testing.assert_allclose(
        after, expected / expected.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-6
    )
