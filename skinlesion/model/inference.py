"""Running a model on raw images: the one path evaluation, `predict`, the gate and the
served model share, so that none of them can prepare an image differently."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from skinlesion.labels import CLASSES
from skinlesion.model.metadata import model_inputs


def predict_raw(
    model: Any,
    images: Iterable[np.ndarray],
    metadata: np.ndarray | None,
    batch_size: int,
    tta: bool = False,
) -> np.ndarray:
    """Class probabilities for raw uint8 RGB images (any sizes) through the model's own
    preprocessing; with ``tta`` the mean over the identity and three flips. Consecutive
    images of one size are batched together. ``metadata`` (encoded, one row per image)
    goes to a model that takes it; None means unknown."""
    out: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    start = 0

    def flush() -> None:
        x = np.stack(batch)
        meta = None if metadata is None else metadata[start : start + len(batch)]
        views = [x]
        if tta:
            views += [x[:, :, ::-1], x[:, ::-1, :], x[:, ::-1, ::-1]]
        probs = [
            np.asarray(model.predict_on_batch(model_inputs(model, np.ascontiguousarray(v), meta)))
            for v in views
        ]
        out.append(np.mean(probs, axis=0))

    for image in images:
        if batch and (image.shape != batch[0].shape or len(batch) == batch_size):
            flush()
            start += len(batch)
            batch = []
        batch.append(np.asarray(image, dtype=np.uint8))
    if batch:
        flush()
    if not out:
        return np.zeros((0, len(CLASSES)), dtype="float64")
    return np.concatenate(out).astype("float64")
