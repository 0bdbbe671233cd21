"""Metrics from per-class counts, and bootstrap resampling of whole lesions.

Images of one lesion are not independent, so intervals resample lesions, not images. Both
the evaluation's intervals and the promotion gate's paired comparison count, per lesion,
how many images of each class there are and how many a model got right; a resample is then
a vector of lesion weights, and every metric is a function of weighted class counts. This
keeps a thousand resamples of a few thousand images to a few matrix products.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from skinlesion.labels import CLASSES

MEL = CLASSES.index("mel")


def class_rates(total: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Per class (last axis): the share of its images counted in ``correct`` (recall, or
    the coverage of prediction sets); NaN for a class without images."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, correct / np.where(total > 0, total, 1), np.nan)


def balanced_accuracy(total: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Mean recall over the classes present (last axis: classes)."""
    return np.nanmean(class_rates(total, correct), axis=-1)


def accuracy(total: np.ndarray, correct: np.ndarray) -> np.ndarray:
    return correct.sum(axis=-1) / np.maximum(total.sum(axis=-1), 1)


def melanoma_sensitivity(total: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Recall of melanoma; NaN where no melanoma image is present."""
    return class_rates(total, correct)[..., MEL]


# The metrics that promotion may rank and gate on, by their params.yaml name.
COUNT_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "balanced_accuracy": balanced_accuracy,
    "accuracy": accuracy,
    "melanoma_sensitivity": melanoma_sensitivity,
}


def lesion_counts(
    y: np.ndarray, hits: list[np.ndarray], groups: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per lesion and class: the number of images (G x K) and, for each boolean array in
    ``hits`` (one per model: image predicted right), the number predicted right."""
    codes, uniques = pd.factorize(pd.Series(groups))
    shape = (len(uniques), len(CLASSES))
    total = np.zeros(shape)
    np.add.at(total, (codes, y), 1)
    correct = []
    for hit in hits:
        counts = np.zeros(shape)
        np.add.at(counts, (codes[hit], y[hit]), 1)
        correct.append(counts)
    return total, correct


def lesion_weights(n_groups: int, resamples: int, seed: int) -> np.ndarray:
    """``resamples`` x ``n_groups``: how often each lesion is drawn in each resample
    (``n_groups`` draws with replacement)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_groups, np.full(n_groups, 1 / n_groups), size=resamples).astype(float)


def percentile_interval(values: np.ndarray, confidence: float) -> list[float]:
    """The central ``confidence`` interval of the resampled values (NaNs ignored)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return []
    tail = 100 * (1 - confidence) / 2
    return [float(v) for v in np.percentile(finite, [tail, 100 - tail])]
