"""Conformal prediction sets: every class the model cannot rule out at level ``alpha``.

Split conformal, class-conditional (Mondrian by the true class): the non-conformity of a
labelled calibration image is the hinge score ``1 - p(true class)``; a class enters an
image's set when its p-value among the calibration scores *of that class* is at least
``alpha``. For each class, the true class is then in the set of at least ``1 - alpha`` of
its images, whatever the model (exchangeable data assumed), and not only on average over
the classes: the rare classes, melanoma among them, get the coverage too.

The p-values are crepes' (``ConformalClassifier``, without smoothing, so the sets are
deterministic and the coverage conservative). The calibration scores are kept with the
model (:mod:`skinlesion.model.reliability`), so every path that loads it gives the same sets.
"""

from __future__ import annotations

import numpy as np


def hinge_scores(probs: np.ndarray) -> np.ndarray:
    """Non-conformity of every class for every image: ``1 - p`` (n x K)."""
    from crepes.extras import hinge

    return hinge(probs)


def true_class_scores(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Non-conformity of the true class of each calibration image (n)."""
    return hinge_scores(probs)[np.arange(len(labels)), labels]


def prediction_sets(
    cal_scores: np.ndarray, cal_labels: np.ndarray, probs: np.ndarray, alpha: float
) -> np.ndarray:
    """(n x K) booleans: class k is in an image's set at miscoverage ``alpha``, judged
    against the calibration scores of class k only. A class with no calibration image
    cannot be ruled out, so it is in every set."""
    from crepes import ConformalClassifier

    scores = hinge_scores(probs)
    if len(scores) == 0:
        return np.zeros(probs.shape, dtype=bool)
    classifier = ConformalClassifier().fit(cal_scores, bins=cal_labels.astype(int))
    sets = np.zeros(probs.shape, dtype=bool)
    for k in range(probs.shape[1]):
        bins = np.full(len(scores), k)
        chosen = classifier.predict_set(scores, bins=bins, confidence=1 - alpha, smoothing=False)
        sets[:, k] = np.asarray(chosen)[:, k].astype(bool)
    return sets
