"""Melanoma sensitivity at a fixed specificity: how well a model *ranks* melanoma above the
other classes, whatever its decision threshold.

A clinic that must keep its biopsy rate fixed (a specificity) asks how many melanomas the
model then finds. This reads the melanoma probability as a score, sets the threshold at
the ``specificity`` quantile of the non-melanoma images' scores, and counts the
melanomas above it. Training reports it on validation at every specificity of
:data:`SPECIFICITIES` (what promotion may choose a challenger by); evaluation and the
promotion gate compute it on test lesions, the gate with lesion weights for its paired
bootstrap (:func:`weighted_sensitivity_at`).
"""

from __future__ import annotations

import numpy as np

from skinlesion.labels import CLASSES

MEL = CLASSES.index("mel")
# The specificities a training report gives the validation sensitivity at.
SPECIFICITIES = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.50 .. 0.95


def sensitivity_at(probs: np.ndarray, y: np.ndarray, specificity: float) -> float:
    """The share of melanoma images whose melanoma score is above the ``specificity``
    quantile of the other images' scores; NaN without images of both kinds."""
    weights = np.ones((1, len(y)))
    return float(weighted_sensitivity_at(probs[:, MEL], y == MEL, weights, specificity)[0])


def weighted_sensitivity_at(
    scores: np.ndarray, positive: np.ndarray, weights: np.ndarray, specificity: float
) -> np.ndarray:
    """:func:`sensitivity_at` under each row of image ``weights`` (R x n, e.g. how often a
    bootstrap resample drew each image's lesion): one figure per row."""
    neg_order = np.argsort(scores[~positive], kind="stable")
    neg_scores = scores[~positive][neg_order]
    neg_weights = weights[:, ~positive][:, neg_order]
    pos_scores = scores[positive]
    pos_weights = weights[:, positive]
    out = np.full(weights.shape[0], np.nan)
    if len(neg_scores) == 0 or len(pos_scores) == 0:
        return out
    cumulative = np.cumsum(neg_weights, axis=1)
    totals = cumulative[:, -1]
    for r in range(weights.shape[0]):
        if totals[r] <= 0 or pos_weights[r].sum() <= 0:
            continue
        # the smallest threshold that keeps at least `specificity` of the negatives below
        index = int(np.searchsorted(cumulative[r], specificity * totals[r], side="left"))
        threshold = neg_scores[min(index, len(neg_scores) - 1)]
        out[r] = (pos_weights[r] * (pos_scores > threshold)).sum() / pos_weights[r].sum()
    return out


def sensitivity_curve(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """:func:`sensitivity_at` at each of :data:`SPECIFICITIES`, keyed ``"0.80"``."""
    return {f"{s:.2f}": sensitivity_at(probs, y, s) for s in SPECIFICITIES}
