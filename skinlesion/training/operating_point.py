"""The melanoma operating point of a trained model: the decision rule, set on the
validation part and folded into the bias of the model's softmax layer.

The network is trained on oversampled, class-weighted data, so its plain argmax already
treats the classes evenly. What a clinic adds is a floor on the sensitivity of some
classes (melanoma above all): for each floored class, the smallest non-negative offset on
its log-probability that reaches the floor on the *validation* predictions. The test part
is never looked at. The offsets go into the bias of the model's softmax layer, so every
consumer sees the same decisions.

Why one offset per floored class and not a free search over all seven: with ~1,200
validation images (15-20 of the rarest classes) seven free offsets fit noise. Measured on
two CNN runs, offsets tuned on one half of the validation lesions and applied to the other
half gave balanced accuracy 0.58 against 0.62-0.63 for the plain argmax, while a single
melanoma offset kept 0.62-0.63 and raised melanoma recall to the floor.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from skinlesion.config.schema import TrainSettings
from skinlesion.labels import CLASSES
from skinlesion.training.fitting import Context

log = logging.getLogger(__name__)
MEL = CLASSES.index("mel")


def melanoma_offsets(probs: np.ndarray, y: np.ndarray, train: TrainSettings) -> np.ndarray:
    """The offsets that raise melanoma's decision until the validation melanoma recall of
    ``probs`` reaches ``train.decision_min_mel_recall`` (never looking at test), logged
    to the active MLflow run: a model's and an ensemble's operating point alike."""
    import mlflow

    floor = train.decision_min_mel_recall
    grid = offset_grid(train.decision_offset_max, train.decision_offset_step)
    offsets, before, after = fit_recall_floors(probs, y, {MEL: floor}, grid)
    log.info(
        "melanoma decision offset %.2f for validation recall >= %.2f: "
        "validation balanced accuracy %.4f -> %.4f",
        offsets[MEL],
        floor,
        before,
        after,
    )
    mlflow.log_metrics(
        {"val_balanced_accuracy_argmax": before, "val_balanced_accuracy_operating_point": after}
    )
    mlflow.log_dict(
        {c: float(o) for c, o in zip(CLASSES, offsets, strict=True)}, "decision_offsets.json"
    )
    return offsets


def set_operating_point(model: Any, ctx: Context, probs: np.ndarray) -> dict[str, Any]:
    """:func:`melanoma_offsets` of ``model``'s validation ``probs``, folded into its
    softmax bias. Returns the validation metrics at that operating point and the offsets
    (``decision_offsets``: an ensemble undoes them to combine the members' calibrated
    probabilities)."""
    from sklearn.metrics import balanced_accuracy_score

    from skinlesion.model.networks import shift_decisions

    offsets = melanoma_offsets(probs, ctx.y_val, ctx.train)
    shift_decisions(model, offsets.tolist())
    decided = (np.log(np.clip(probs, 1e-7, 1.0)) + offsets).argmax(axis=1)
    mel = ctx.y_val == MEL
    return {
        "decision_offsets": offsets.tolist(),
        "val_balanced_accuracy": float(balanced_accuracy_score(ctx.y_val, decided)),
        "val_mel_recall": float((decided[mel] == MEL).mean()) if mel.any() else float("nan"),
        "val_accuracy": float((decided == ctx.y_val).mean()),
    }


def offset_grid(maximum: float, step: float) -> np.ndarray:
    """The offsets tried, from 0 up to ``maximum`` (train.decision_offset_max/_step)."""
    return np.round(np.arange(0.0, maximum + step / 2, step), 6)


def fit_recall_floors(
    probs: np.ndarray,
    labels: np.ndarray,
    min_recall: dict[int, float],
    grid: np.ndarray,
) -> tuple[np.ndarray, float, float]:
    """Offsets for argmax(log p + offsets) that meet each ``min_recall`` floor
    (class index -> recall) on (probs, labels) with the smallest shift.

    Classes without a floor, or absent from ``labels``, keep offset 0. A floor that no
    offset on the grid reaches gets the grid's largest value.

    Returns (offsets, balanced accuracy before, after)."""
    logp = np.log(np.clip(probs, 1e-7, 1.0))
    offsets = np.zeros(probs.shape[1])

    def recall(k: int, trial: np.ndarray) -> float:
        return float(((logp[labels == k] + trial).argmax(axis=1) == k).mean())

    for k, floor in sorted(min_recall.items()):
        if floor <= 0 or not (labels == k).any():
            continue
        for value in grid:
            offsets[k] = value
            if recall(k, offsets) >= floor:
                break
    before = float(balanced_accuracy_score(labels, logp.argmax(axis=1)))
    after = float(balanced_accuracy_score(labels, (logp + offsets).argmax(axis=1)))
    return offsets, before, after
