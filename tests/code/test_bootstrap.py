"""Bootstrap intervals over lesions for the headline test figures."""

from __future__ import annotations

import numpy as np
import pytest

from skinlesion.evaluation.metrics import MEL, bootstrap_intervals

pytestmark = pytest.mark.code


def _predictions(n_lesions: int, images_per_lesion: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    lesion_class = rng.integers(0, 7, n_lesions)
    lesion_right = rng.random(n_lesions) < 0.7  # all images of a lesion right or wrong
    y = np.repeat(lesion_class, images_per_lesion)
    pred = np.where(np.repeat(lesion_right, images_per_lesion), y, (y + 1) % 7)
    groups = np.repeat([f"L{i}" for i in range(n_lesions)], images_per_lesion)
    return y, pred, groups


def test_interval_covers_the_figure_and_narrows_with_more_lesions():
    widths = []
    for n_lesions in (60, 600):
        y, pred, groups = _predictions(n_lesions, 1)
        ci = bootstrap_intervals(y, pred, groups, 400, 0)
        low, high = ci["balanced_accuracy"]
        recall = [np.mean(pred[y == k] == k) for k in range(7) if (y == k).any()]
        assert low <= np.mean(recall) <= high
        assert ci["melanoma_sensitivity"][0] <= np.mean(pred[y == MEL] == MEL)
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


def test_resampling_lesions_not_images_keeps_copies_of_a_lesion_together():
    """Five images per lesion carry no more information than one: a bootstrap over images
    would claim an interval about sqrt(5) times too narrow."""
    y, pred, groups = _predictions(80, 5)
    by_lesion = np.diff(bootstrap_intervals(y, pred, groups, 400, 0)["balanced_accuracy"])[0]
    by_image = np.diff(
        bootstrap_intervals(y, pred, np.arange(len(y)).astype(str), 400, 0)["balanced_accuracy"]
    )[0]
    assert by_lesion > 1.6 * by_image
