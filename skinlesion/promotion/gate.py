"""The promotion gate: the policy that decides whether a challenger replaces the champion.

Pure functions of labels and predictions, with no registry in sight, so the policy can be
read and tested on its own:

* the challenger is chosen among new models by their **validation** figure only;
* the gate scores challenger and champion on the same test images, restricted to lesions
  that neither model was trained or selected on;
* it is *paired*: a bootstrap over those lesions of the **difference** in the primary
  metric, and the challenger wins only when the lower end of its interval is above
  ``min_improvement``, and melanoma sensitivity does not drop by more than the guard allows;
* the challenger's conformal prediction sets must keep their promise on those lesions:
  a class whose coverage is below ``1 - alpha - coverage_tolerance`` even at the upper
  end of its lesion interval stops it (:func:`check_coverage`). The interval, not the
  point, because a class has 15-40 test images: a point below the line by chance would
  block good models, an interval wholly below it does not happen by chance.

With ±0.05 of sampling noise in one test split's balanced accuracy, comparing two point
estimates would promote lucky challengers; the paired interval does not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from skinlesion.config.schema import PromotionSettings
from skinlesion.evaluation.resampling import (
    COUNT_METRICS,
    class_rates,
    lesion_counts,
    lesion_weights,
    melanoma_sensitivity,
    percentile_interval,
)

# Where a model's validation figure for each primary metric sits in its training report.
VALIDATION_KEYS: dict[str, str] = {
    "balanced_accuracy": "val_balanced_accuracy",
    "accuracy": "val_accuracy",
    "melanoma_sensitivity": "val_mel_recall",
}


class GateError(ValueError):
    """The gate cannot be applied as configured or to the data given."""


@dataclass(frozen=True)
class Answers:
    """A model's answers on the gate's rows: the predicted class of each, and its conformal
    prediction sets (n x K booleans) at miscoverage ``alpha``; None for a model saved
    before models carried them."""

    classes: np.ndarray
    sets: np.ndarray | None = None
    alpha: float = 0.0


@dataclass(frozen=True)
class CoverageCheck:
    """The challenger's per-class coverage on the gate's lesions against its promise."""

    floor: float  # 1 - alpha - coverage_tolerance
    coverage: dict[str, float]
    upper: dict[str, float]  # upper end of each class's interval at ``confidence``
    short: list[str]  # classes whose whole interval lies below the floor

    def describe(self) -> str:
        return ", ".join(
            f"{c} {self.coverage[c]:.3f} (up to {self.upper[c]:.3f})" for c in self.short
        )


def check_coverage(
    y: np.ndarray, answers: Answers, groups: np.ndarray, settings: PromotionSettings
) -> CoverageCheck | None:
    """Per-class coverage of the sets in ``answers`` with the upper ends of its lesion
    bootstrap intervals; None when the model has no sets."""
    from skinlesion.labels import CLASSES

    if answers.sets is None or len(y) == 0:
        return None
    covered = answers.sets[np.arange(len(y)), y]
    total, (hits,) = lesion_counts(y, [covered], groups)
    weights = lesion_weights(len(total), settings.resamples, settings.seed)
    floor = 1 - answers.alpha - settings.coverage_tolerance
    by_class = class_rates(total.sum(axis=0), hits.sum(axis=0))
    resampled = class_rates(weights @ total, weights @ hits)
    coverage, upper, short = {}, {}, []
    for k, name in enumerate(CLASSES):
        if np.isnan(by_class[k]):
            continue
        coverage[name] = float(by_class[k])
        upper[name] = percentile_interval(resampled[:, k], settings.confidence)[1]
        if upper[name] < floor:
            short.append(name)
    return CoverageCheck(floor=floor, coverage=coverage, upper=upper, short=short)


@dataclass(frozen=True)
class Comparison:
    """Challenger against champion on the same images: the figures behind a decision."""

    metric: str
    challenger: float
    champion: float
    difference: float
    interval: list[float]  # of the difference, at ``confidence``
    confidence: float
    mel_challenger: float
    mel_champion: float
    n_images: int
    n_lesions: int

    def describe(self) -> str:
        lo, hi = self.interval or [math.nan, math.nan]
        return (
            f"{self.metric} {self.challenger:.4f} vs {self.champion:.4f}, difference "
            f"{self.difference:+.4f} ({100 * self.confidence:.0f}% interval {lo:+.4f} to "
            f"{hi:+.4f}); melanoma sensitivity {self.mel_challenger:.4f} vs "
            f"{self.mel_champion:.4f}; on {self.n_images} test images of {self.n_lesions} "
            "lesions neither model saw"
        )

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def choose_challenger(validation: dict[str, dict[str, Any]], settings: PromotionSettings) -> str:
    """The name of the best new model by its validation figure (never by test)."""
    key = VALIDATION_KEYS[settings.primary_metric]
    scored = {}
    for name, report in validation.items():
        value = float(report.get(key, math.nan))
        if not math.isnan(value):
            scored[name] = value
    if not scored:
        raise GateError(f"no new model reports {key}: cannot choose a challenger")
    return max(sorted(scored), key=lambda name: scored[name])


def compare(
    y: np.ndarray,
    challenger_pred: np.ndarray,
    champion_pred: np.ndarray,
    groups: np.ndarray,
    settings: PromotionSettings,
) -> Comparison:
    """Both models' figures on the same images, and the paired bootstrap interval of the
    difference (challenger minus champion), resampling whole lesions."""
    n_lesions = len(set(groups.tolist()))
    if n_lesions < settings.min_gate_lesions:
        raise GateError(
            f"only {n_lesions} test lesions are unseen by both models (need "
            f"{settings.min_gate_lesions}, promote.min_gate_lesions): refusing to compare"
        )
    measure = COUNT_METRICS[settings.primary_metric]
    total, (right_new, right_old) = lesion_counts(
        y, [challenger_pred == y, champion_pred == y], groups
    )
    weights = lesion_weights(len(total), settings.resamples, settings.seed)
    sampled = weights @ total
    differences = measure(sampled, weights @ right_new) - measure(sampled, weights @ right_old)
    overall = total.sum(axis=0)
    new = float(measure(overall, right_new.sum(axis=0)))
    old = float(measure(overall, right_old.sum(axis=0)))
    return Comparison(
        metric=settings.primary_metric,
        challenger=new,
        champion=old,
        difference=new - old,
        interval=percentile_interval(differences, settings.confidence),
        confidence=settings.confidence,
        mel_challenger=float(melanoma_sensitivity(overall, right_new.sum(axis=0))),
        mel_champion=float(melanoma_sensitivity(overall, right_old.sum(axis=0))),
        n_images=len(y),
        n_lesions=n_lesions,
    )


def verdict(
    comparison: Comparison, settings: PromotionSettings, coverage: CoverageCheck | None = None
) -> tuple[bool, str]:
    """Does the challenger win, and the sentence that says why."""
    figures = comparison.describe()
    lower = comparison.interval[0] if comparison.interval else math.nan
    if not lower > settings.min_improvement:
        return False, (
            f"champion stays: {figures}; the interval's lower end must exceed "
            f"{settings.min_improvement:+.4f}"
        )
    drop = comparison.mel_champion - comparison.mel_challenger
    if drop > settings.max_mel_recall_drop:
        return False, (
            f"champion stays: melanoma guard rail, {figures} (may drop at most "
            f"{settings.max_mel_recall_drop})"
        )
    if coverage is not None and coverage.short:
        return False, (
            f"champion stays: coverage guard, the challenger's prediction sets hold the true "
            f"class of {coverage.describe()} of these images, below {coverage.floor:.3f}; "
            f"{figures}"
        )
    return True, f"challenger wins: {figures}"
