"""Fitting a trained model's reliability (:mod:`skinlesion.model.reliability`) on data it
did not learn from, after the melanoma operating point is set.

* **Conformal calibration on the validation part.** The sets need scores of labelled
  images the model was not trained on, with lesions apart from the test part: validation
  is that. It also chose the best epoch and the melanoma offset, so its scores are a
  little better than those of new lesions, and the guarantee of ``1 - alpha`` per class
  is then approximate rather than exact. Carving a separate part would leave 7-9
  dermatofibroma or vascular images to calibrate each half, too few for a per-class
  level of 90% (that needs at least 9). The coverage on the test lesions, which nothing
  here reads, is what evaluation reports and the promotion gate checks.
* **The feature distance** is fitted on the training images (each once, not its
  oversampled copies; at most ``reference_images``, sampled), and its threshold is the
  ``1 - ood_false_refer`` quantile of the validation images' distances: that share of
  in-distribution images is referred as out of distribution, by design.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from skinlesion.config.schema import ReliabilitySettings, ValidationSettings
from skinlesion.data.contract import InputContract
from skinlesion.model.metadata import model_inputs
from skinlesion.model.operating_curve import sensitivity_curve
from skinlesion.model.reliability import (
    Assessment,
    Reliability,
    feature_model,
    pooled_feature_layer,
)
from skinlesion.training.fitting import Context

log = logging.getLogger(__name__)


def _features_and_probs(
    probe: Any, ctx: Context, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features and probabilities of table rows, as the model sees them in use.
    Called batch by batch, not through ``predict``: one pass over a few thousand images
    does not repay compiling a graph for a new model (tens of seconds for ResNet152V2)."""
    features, probs = [], []
    for start in range(0, len(rows), ctx.batch_size):
        chunk = rows[start : start + ctx.batch_size]
        images = ctx.table.images[chunk].astype("float32")
        metadata = ctx.table.metadata[chunk] if ctx.inputs.metadata else None
        f, p = probe(model_inputs(probe, images, metadata), training=False)
        features.append(np.asarray(f, dtype="float64"))
        probs.append(np.asarray(p, dtype="float64"))
    return np.concatenate(features), np.concatenate(probs)


def reference_sample(n: int, limit: int, seed: int) -> np.ndarray:
    """Which of ``n`` training images (each once) the feature distance is fitted on: all,
    or ``limit`` of them drawn with ``seed``, in their order (a model's and an ensemble's
    alike)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, False))


def reference_rows(ctx: Context, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Training images (table rows, each once) and their labels, at most ``limit``."""
    rows, first = np.unique(ctx.train_idx, return_index=True)
    chosen = reference_sample(len(rows), limit, ctx.train.seed)
    return rows[chosen], ctx.y_train[first][chosen]


def fit_reliability(
    core: Any,
    ctx: Context,
    settings: ReliabilitySettings,
    validation: ValidationSettings,
    adjustments: dict[str, list[float]] | None = None,
) -> tuple[Reliability, dict[str, float], tuple[np.ndarray, np.ndarray]]:
    """The reliability of ``core`` (at its operating point); validation figures to log
    (mean set size, singleton share and refer rate of the validation images); and the
    validation images' (features, probabilities), for the monitoring reference
    (:func:`skinlesion.model.reference.monitoring_reference`)."""
    layer = pooled_feature_layer(core)
    probe = feature_model(core, layer)
    ref_rows, ref_labels = reference_rows(ctx, settings.reference_images)
    ref_features, _ = _features_and_probs(probe, ctx, ref_rows)
    val_features, val_probs = _features_and_probs(probe, ctx, ctx.val_idx)
    reliability = Reliability.fit(
        (ref_features, ref_labels),
        (val_features, val_probs, ctx.y_val),
        settings,
        InputContract.of(validation),
        layer,
        adjustments,
    )
    assessed = reliability.assess(val_probs, val_features)
    figures = reliability_figures(assessed, val_probs, ctx.y_val)
    figures["ood_threshold"] = reliability.ood_threshold
    log.info(
        "reliability on validation (calibration part): %d images, sets of %.2f classes on "
        "average, %.0f%% single-class, %.0f%% referred; feature distance threshold %.1f "
        "(from %d training images)",
        len(val_probs),
        figures["val_set_size_mean"],
        100 * figures["val_singleton_share"],
        100 * figures["val_refer_rate"],
        reliability.ood_threshold,
        len(ref_rows),
    )
    return reliability, figures, (val_features, val_probs)


def reliability_figures(assessed: Assessment, probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """What a clinic would feel of a model, on validation: the mean set size, the share of
    single-class answers, the refer rate, and melanoma sensitivity at fixed specificities
    (``val_mel_sensitivity_at_0.80``, ...); what promotion may choose a challenger by."""
    sizes = assessed.sets.sum(axis=1)
    return {
        "val_set_size_mean": float(sizes.mean()),
        "val_singleton_share": float((sizes == 1).mean()),
        "val_refer_rate": float(assessed.refer.mean()),
        **{
            f"val_mel_sensitivity_at_{spec}": value
            for spec, value in sensitivity_curve(probs, y).items()
        },
    }
