"""The melanoma operating point of a trained model, set on validation predictions only
(:mod:`skinlesion.training.decision`) and folded into the model's softmax bias."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from skinlesion.config.schema import TrainSettings
from skinlesion.labels import CLASSES
from skinlesion.training.decision import fit_recall_floors, offset_grid
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
