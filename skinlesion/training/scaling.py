"""Calibrating a trained model's probabilities on the validation part, before its operating
point and reliability are fitted (:mod:`skinlesion.model.confidence` says why and how).

The scaling is folded into the softmax layer, so the operating point, the conformal sets
and any ensemble the model joins all start from calibrated probabilities. What each kind
of scaling would do on validation lesions it was not fitted on (cross-fitted halves) is
logged beside the choice, so ``train.calibration`` can be judged by measurement.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from skinlesion.model.confidence import (
    Scaling,
    cross_fitted,
    expected_calibration_error,
    fit_scaling,
    log_probs_of,
)
from skinlesion.model.networks import scale_logits

log = logging.getLogger(__name__)


def calibrate(
    model: Any,
    probs: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    kind: Scaling,
    bins: int,
    seed: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit ``kind`` on the validation ``probs`` of ``model`` and fold it in. Returns the
    calibrated validation probabilities and the figures to report: the ECE before and
    after (in-sample), the temperature, and the cross-fitted ECE, NLL and balanced
    accuracy of every kind; and the scaling itself (``calibration_scale`` and
    ``calibration_shift``, which the model's reliability records)."""
    import mlflow

    scaling = fit_scaling(probs, y, kind)
    scale_logits(model, scaling.scale, scaling.shift)
    calibrated = scaling.apply(log_probs_of(probs))
    figures: dict[str, Any] = {
        "val_ece_uncalibrated": expected_calibration_error(probs, y, bins)[0],
        "val_ece": expected_calibration_error(calibrated, y, bins)[0],
        "temperature": scaling.temperature,
        **{f"val_cv_{k}": v for k, v in cross_fitted(probs, y, groups, bins, seed).items()},
    }
    log.info(
        "calibration (%s, fitted on validation): ECE %.3f -> %.3f, temperature %.2f; on "
        "validation lesions it was not fitted on: ECE none %.3f, temperature %.3f, vector %.3f",
        kind,
        figures["val_ece_uncalibrated"],
        figures["val_ece"],
        figures["temperature"],
        figures["val_cv_none_ece"],
        figures["val_cv_temperature_ece"],
        figures["val_cv_vector_ece"],
    )
    mlflow.log_metrics(figures)
    figures["calibration_scale"] = scaling.scale.tolist()
    figures["calibration_shift"] = scaling.shift.tolist()
    return calibrated, figures
