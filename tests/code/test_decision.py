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
