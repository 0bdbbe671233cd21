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
import pandas as pd

from skinlesion.config.schema import PromotionSettings
from skinlesion.evaluation.resampling import (
    COUNT_METRICS,
    class_rates,
    lesion_counts,
    lesion_weights,
    melanoma_sensitivity,
    percentile_interval,
)
from skinlesion.model.operating_curve import MEL, weighted_sensitivity_at

# Where a model's validation figure for each primary metric sits in its training report
# (melanoma_sensitivity_at_specificity: under val_mel_sensitivity_at, by specificity).
VALIDATION_KEYS: dict[str, str] = {
    "balanced_accuracy": "val_balanced_accuracy",
    "accuracy": "val_accuracy",
    "melanoma_sensitivity": "val_mel_recall",
    "refer_rate": "val_refer_rate",
    "single_class_share": "val_singleton_share",
    "melanoma_sensitivity_at_specificity": "val_mel_sensitivity_at",
}
# Criteria where less is better: the gate's "difference" is then champion minus challenger.
LOWER_IS_BETTER = frozenset({"refer_rate"})
# Criteria that read the prediction sets and referrals (a model without them has none).
SET_METRICS = frozenset({"refer_rate", "single_class_share"})


def validation_figure(report: dict[str, Any], settings: PromotionSettings) -> float:
    """A model's validation figure of ``promote.primary_metric`` as its training report
    gives it, NaN when it has none."""
    metric = settings.primary_metric
    value = report.get(VALIDATION_KEYS[metric], math.nan)
    if metric == "melanoma_sensitivity_at_specificity":
        value = (value or {}).get(f"{settings.mel_specificity:.2f}", math.nan)
    return float(math.nan if value is None else value)


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
    refer: np.ndarray | None = None  # referred to a clinician (n booleans)
    mel_scores: np.ndarray | None = None  # the melanoma probability of each image


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
            f"{self.metric} {self.challenger:.4f} vs {self.champion:.4f}, "
            f"{'reduction' if self.metric in LOWER_IS_BETTER else 'difference'} "
            f"{self.difference:+.4f} ({100 * self.confidence:.0f}% interval {lo:+.4f} to "
            f"{hi:+.4f}); melanoma sensitivity {self.mel_challenger:.4f} vs "
            f"{self.mel_champion:.4f}; on {self.n_images} test images of {self.n_lesions} "
            "lesions neither model saw"
        )

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def choose_challenger(validation: dict[str, dict[str, Any]], settings: PromotionSettings) -> str:
    """The name of the best new model by its validation figure (never by test)."""
    sign = -1.0 if settings.primary_metric in LOWER_IS_BETTER else 1.0
    scored = {}
    for name, report in validation.items():
        value = validation_figure(report, settings)
        if not math.isnan(value):
            scored[name] = sign * value
    if not scored:
        key = VALIDATION_KEYS[settings.primary_metric]
        raise GateError(f"no new model reports {key}: cannot choose a challenger")
    return max(sorted(scored), key=lambda name: scored[name])


def _as_answers(answers: Answers | np.ndarray) -> Answers:
    return answers if isinstance(answers, Answers) else Answers(np.asarray(answers))


def _figures(
    y: np.ndarray,
    answers: Answers,
    codes: np.ndarray,
    weights: np.ndarray,
    settings: PromotionSettings,
) -> tuple[float, np.ndarray]:
    """``answers``' figure of the primary metric on all images, and under each resample of
    lesion ``weights`` (R x G); ``codes`` is each image's lesion (0..G-1)."""
    metric = settings.primary_metric
    if metric == "melanoma_sensitivity_at_specificity":
        if answers.mel_scores is None:
            raise GateError(f"{metric} needs the models' probabilities")
        spec = settings.mel_specificity
        mel = y == MEL
        overall = weighted_sensitivity_at(answers.mel_scores, mel, np.ones((1, len(y))), spec)
        return float(overall[0]), weighted_sensitivity_at(
            answers.mel_scores, mel, weights[:, codes], spec
        )
    if metric in SET_METRICS:
        if answers.sets is None or answers.refer is None:
            raise GateError(f"{metric} needs prediction sets: a model saved without them has none")
        hits = answers.refer if metric == "refer_rate" else answers.sets.sum(axis=1) == 1
        measure = COUNT_METRICS["accuracy"]
    else:
        hits = answers.classes == y
        measure = COUNT_METRICS[metric]
    total, (counted,) = lesion_counts(y, [hits], codes)
    overall = float(measure(total.sum(axis=0), counted.sum(axis=0)))
    return overall, measure(weights @ total, weights @ counted)


def compare(
    y: np.ndarray,
    challenger: Answers | np.ndarray,
    champion: Answers | np.ndarray,
    groups: np.ndarray,
    settings: PromotionSettings,
) -> Comparison:
    """Both models' figures on the same images (their answers, or their predicted
    classes), and the paired bootstrap interval of the difference (challenger minus
    champion; champion minus challenger where less is better), resampling whole lesions."""
    new_answers, old_answers = _as_answers(challenger), _as_answers(champion)
    n_lesions = len(set(groups.tolist()))
    if n_lesions < settings.min_gate_lesions:
        raise GateError(
            f"only {n_lesions} test lesions are unseen by both models (need "
            f"{settings.min_gate_lesions}, promote.min_gate_lesions): refusing to compare"
        )
    codes = pd.factorize(pd.Series(groups))[0]
    weights = lesion_weights(n_lesions, settings.resamples, settings.seed)
    new, new_resampled = _figures(y, new_answers, codes, weights, settings)
    old, old_resampled = _figures(y, old_answers, codes, weights, settings)
    sign = -1.0 if settings.primary_metric in LOWER_IS_BETTER else 1.0
    differences = sign * (new_resampled - old_resampled)
    total, (right_new, right_old) = lesion_counts(
        y, [new_answers.classes == y, old_answers.classes == y], codes
    )
    overall = total.sum(axis=0)
    return Comparison(
        metric=settings.primary_metric,
        challenger=new,
        champion=old,
        difference=sign * (new - old),
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
