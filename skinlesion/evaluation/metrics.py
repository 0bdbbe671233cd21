"""The evaluation's figures, computed from labels and probabilities alone (no model, no
files), so that the numbers of the report can be read and tested on their own.

Keys (stable in the JSON): ``n_images``, ``accuracy``, ``balanced_accuracy``, ``macro_f1``,
``macro_auc`` (one-vs-rest), ``recall`` / ``precision`` / ``f1`` (class -> value),
``melanoma`` (sensitivity and specificity of the decisions; ``sensitivity_at_specificity``:
the melanoma score's sensitivity at specificities 0.50-0.95, keyed "0.80"), ``ece``
(expected calibration error; ``evaluate`` adds ``ece_uncalibrated``, the network's own,
before the calibration and the melanoma operating point fitted on validation),
``confusion_matrix`` (rows: true class, columns: predicted, in ``classes`` order),
``subgroups`` (sex, age band, localization) and ``ci95`` (95% intervals of balanced accuracy
and melanoma sensitivity from a bootstrap over lesions: with 13-40 test images in the
smallest classes, one split's figure is uncertain by several points).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd

from skinlesion.config.schema import EvalSettings
from skinlesion.labels import CLASSES
from skinlesion.model.confidence import expected_calibration_error
from skinlesion.model.operating_curve import sensitivity_curve

MEL = CLASSES.index("mel")
AGE_BANDS = (0, 30, 45, 60, 75, 200)


def core_metrics(y: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Headline metrics from labels and probabilities (also used for subgroups)."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        f1_score,
        roc_auc_score,
    )

    pred = probs.argmax(axis=1)
    present = sorted(set(y.tolist()))
    aucs = {}
    for k in present:
        positives = y == k
        if 0 < positives.sum() < len(y):
            aucs[CLASSES[k]] = float(roc_auc_score(positives, probs[:, k]))
    mel = y == MEL
    return {
        "n_images": len(y),
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
        "macro_auc": float(np.mean(list(aucs.values()))) if aucs else float("nan"),
        "auc": aucs,
        "melanoma": {
            "n": int(mel.sum()),
            "sensitivity": float((pred[mel] == MEL).mean()) if mel.any() else float("nan"),
            "specificity": float((pred[~mel] != MEL).mean()) if (~mel).any() else float("nan"),
        },
    }


def bootstrap_intervals(
    y: np.ndarray, pred: np.ndarray, groups: np.ndarray, resamples: int, seed: int
) -> dict[str, Any]:
    """95% percentile intervals of balanced accuracy and melanoma sensitivity, resampling
    whole lesions (``groups``) with replacement: images of one lesion are not independent."""
    from skinlesion.evaluation.resampling import (
        balanced_accuracy,
        lesion_counts,
        lesion_weights,
        melanoma_sensitivity,
        percentile_interval,
    )

    total, (correct,) = lesion_counts(y, [pred == y], groups)
    weights = lesion_weights(len(total), resamples, seed)
    total, correct = weights @ total, weights @ correct
    return {
        "balanced_accuracy": percentile_interval(balanced_accuracy(total, correct), 0.95),
        "melanoma_sensitivity": percentile_interval(melanoma_sensitivity(total, correct), 0.95),
        "resamples": resamples,
        "unit": "lesion",
    }


def compute_metrics(
    y: np.ndarray, probs: np.ndarray, frame: pd.DataFrame, settings: EvalSettings
) -> dict[str, Any]:
    """All metrics of the report, keys documented in the module docstring."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    pred = probs.argmax(axis=1)
    labels = list(range(len(CLASSES)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=labels, zero_division=0
    )
    ece, bins = expected_calibration_error(probs, y, settings.calibration_bins)
    metrics = core_metrics(y, probs)
    metrics["melanoma"]["sensitivity_at_specificity"] = sensitivity_curve(probs, y)
    metrics.update(
        {
            "classes": list(CLASSES),
            "recall": {c: float(v) for c, v in zip(CLASSES, recall, strict=True)},
            "precision": {c: float(v) for c, v in zip(CLASSES, precision, strict=True)},
            "f1": {c: float(v) for c, v in zip(CLASSES, f1, strict=True)},
            "support": {c: int(v) for c, v in zip(CLASSES, support, strict=True)},
            "ece": ece,
            "calibration": bins,
            "confusion_matrix": confusion_matrix(y, pred, labels=labels).tolist(),
            "subgroups": subgroup_metrics(y, probs, frame, settings.min_subgroup_size),
            "tta": settings.tta,
        }
    )
    if settings.bootstrap > 0:
        groups = frame["lesion_id"] if "lesion_id" in frame else pd.Series(range(len(y)))
        metrics["ci95"] = bootstrap_intervals(
            y, pred, groups.astype(str).to_numpy(), settings.bootstrap, settings.seed
        )
    return metrics


def _labelled(values: pd.Series) -> pd.Series:
    """Strings, with missing values named 'unknown' (as HAM10000 names them)."""
    return values.astype(object).where(values.notna(), "unknown").astype(str)


def subgroup_metrics(
    y: np.ndarray, probs: np.ndarray, frame: pd.DataFrame, min_size: int
) -> dict[str, dict[str, Any]]:
    """Balanced accuracy, melanoma sensitivity and n per sex, age band and localization;
    groups smaller than ``min_size`` are reported with their n only."""
    ages = pd.to_numeric(frame["age"], errors="coerce")
    band = pd.cut(
        ages,
        AGE_BANDS,
        right=False,
        labels=[f"{a}-{b - 1}" for a, b in itertools.pairwise(AGE_BANDS)],
    )
    columns = {
        "sex": _labelled(frame["sex"]),
        "age_band": _labelled(band),
        "localization": _labelled(frame["localization"]),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, values in columns.items():
        groups: dict[str, Any] = {}
        for value in sorted(values.unique()):
            mask = (values == value).to_numpy()
            if mask.sum() < min_size:
                groups[value] = {"n_images": int(mask.sum())}
                continue
            core = core_metrics(y[mask], probs[mask])
            groups[value] = {
                "n_images": core["n_images"],
                "balanced_accuracy": core["balanced_accuracy"],
                "melanoma_sensitivity": core["melanoma"]["sensitivity"],
            }
        out[name] = groups
    return out
