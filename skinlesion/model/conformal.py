"""Conformal prediction sets: every class the model cannot rule out at level ``alpha``.

Split conformal, class-conditional (Mondrian by the true class): the non-conformity of a
labelled calibration image is the hinge score ``1 - p(true class)``; a class enters an
image's set when its p-value among the calibration scores *of that class* is at least
``alpha``. For each class, the true class is then in the set of at least ``1 - alpha`` of
its images, whatever the model (exchangeable data assumed), and not only on average over
the classes: the rare classes, melanoma among them, get the coverage too.

The p-values are those of crepes' ``ConformalClassifier`` without smoothing (so the sets
are deterministic and the coverage conservative): ``(#{calibration scores of k >= s} + 1)
/ (n_k + 1)``, written here in numpy with a sorted search, because the serving image has
no crepes (nor scikit-learn, which it needs) and because crepes compares every image with
every calibration score in Python, 5 ms of an image's answer. A test keeps the two equal.
The calibration scores are kept with the model (:mod:`skinlesion.model.reliability`), so
every path that loads it gives the same sets.
"""

from __future__ import annotations

import numpy as np


def hinge_scores(probs: np.ndarray) -> np.ndarray:
    """Non-conformity of every class for every image: ``1 - p`` (n x K)."""
    return 1 - np.asarray(probs)


def true_class_scores(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Non-conformity of the true class of each calibration image (n)."""
    return hinge_scores(probs)[np.arange(len(labels)), labels]


def prediction_sets(
    cal_scores: np.ndarray, cal_labels: np.ndarray, probs: np.ndarray, alpha: float
) -> np.ndarray:
    """(n x K) booleans: class k is in an image's set at miscoverage ``alpha``, judged
    against the calibration scores of class k only. A class with no calibration image
    cannot be ruled out, so it is in every set."""
    scores = hinge_scores(probs)
    sets = np.zeros(scores.shape, dtype=bool)
    level = 1 - (1 - alpha)  # as crepes compares: p >= 1 - confidence, to the last bit
    for k in range(scores.shape[1]):
        calibration = np.sort(np.asarray(cal_scores)[np.asarray(cal_labels) == k])
        at_least = len(calibration) - np.searchsorted(calibration, scores[:, k], side="left")
        sets[:, k] = (at_least + 1) / (len(calibration) + 1) >= level
    return sets
