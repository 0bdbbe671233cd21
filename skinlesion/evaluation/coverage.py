"""What the prediction sets and referrals of a model are worth on labelled images.

Keys of ``metrics["conformal"]`` (stable in the JSON): ``alpha``; ``coverage`` (share of
images whose set holds the true class) with ``coverage_ci95``; ``coverage_by_class`` and
``coverage_by_class_ci95`` (the guarantee is per class, so this is what to check);
``set_size_mean``, ``singleton_share``, ``empty_share``; ``refer_rate`` and
``ood_rate``; ``answered_accuracy`` (accuracy of the answers not referred, with their
count ``answered``); and ``risk_coverage``, the accuracy of the most confident answers
against the share answered, for the plot. Intervals resample whole lesions, as the
evaluation's other intervals do (:mod:`skinlesion.evaluation.resampling`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skinlesion.evaluation.resampling import (
    accuracy,
    class_rates,
    lesion_counts,
    lesion_weights,
    percentile_interval,
)
from skinlesion.labels import CLASSES
from skinlesion.model.reliability import Assessment


def risk_coverage(y: np.ndarray, probs: np.ndarray, points: int = 20) -> list[dict[str, float]]:
    """Accuracy of the answers kept when only the most confident share is answered, at
    ``points`` shares from 1/points to all."""
    order = np.argsort(-probs.max(axis=1), kind="stable")
    right = (probs.argmax(axis=1) == y)[order]
    curve = []
    for share in np.linspace(1 / points, 1.0, points):
        kept = max(1, round(share * len(y)))
        curve.append({"answered": float(kept / len(y)), "accuracy": float(right[:kept].mean())})
    return curve


def conformal_metrics(
    y: np.ndarray,
    probs: np.ndarray,
    assessment: Assessment,
    groups: np.ndarray,
    alpha: float,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """The coverage, size and referral figures of one model's sets on labelled images."""
    covered = assessment.sets[np.arange(len(y)), y]
    sizes = assessment.sets.sum(axis=1)
    answered = ~assessment.refer
    total, (hits,) = lesion_counts(y, [covered], groups)
    by_class = class_rates(total.sum(axis=0), hits.sum(axis=0))
    report: dict[str, Any] = {
        "alpha": alpha,
        "coverage": float(covered.mean()),
        "coverage_by_class": {c: float(v) for c, v in zip(CLASSES, by_class, strict=True)},
        "set_size_mean": float(sizes.mean()),
        "singleton_share": float((sizes == 1).mean()),
        "empty_share": float((sizes == 0).mean()),
        "refer_rate": float(assessment.refer.mean()),
        "ood_rate": float(
            np.mean(["out of distribution" in reason for reason in assessment.reasons])
        ),
        "answered": int(answered.sum()),
        "answered_accuracy": float((probs.argmax(axis=1) == y)[answered].mean())
        if answered.any()
        else float("nan"),
        "risk_coverage": risk_coverage(y, probs),
    }
    if resamples > 0:
        weights = lesion_weights(len(total), resamples, seed)
        sampled_total, sampled_hits = weights @ total, weights @ hits
        report["coverage_ci95"] = percentile_interval(accuracy(sampled_total, sampled_hits), 0.95)
        per_class = class_rates(sampled_total, sampled_hits)
        report["coverage_by_class_ci95"] = {
            c: percentile_interval(per_class[:, k], 0.95) for k, c in enumerate(CLASSES)
        }
    return report
