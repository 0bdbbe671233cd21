"""The frozen part of a network computed once per run, for phases that train what is above.

A phase that freezes a trunk's lower layers would recompute their output every epoch for
images that do not change; on a CPU that is most of the epoch. Here it is computed once per
distinct image (oversampled copies are repeated row indices into it) and the layers above
are trained on those arrays. Augmentation cannot apply to what is cached, so the recipes
do this where it pays (``cache_features: auto``: on CPU) and train on images elsewhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skinlesion.labels import CLASSES
from skinlesion.training.inputs import batch_parallelism, steady


def frozen_outputs(
    extractor: Any, images: np.ndarray, batch_size: int, desc: str, chunk: int = 512
) -> np.ndarray:
    """``extractor`` (a Keras model, inference mode) over every image. Through ``predict``
    (a compiled graph: calling the model eagerly was several times slower on CPU), a
    chunk of images at a time so that the float copy stays small and progress shows."""
    from skinlesion.progress import progress

    starts = range(0, len(images), chunk)
    return np.concatenate(
        [
            extractor.predict(images[i : i + chunk].astype("float32"), batch_size, verbose=0)
            for i in progress(starts, total=len(starts), desc=desc)
        ]
    )


def cached_batches(
    features: np.ndarray,
    metadata: np.ndarray | None,
    rows: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    training: bool,
    seed: int,
) -> Any:
    """Batches of cached ``features`` (and ``metadata``, for a model that takes it) of the
    given rows, as inputs named ``features`` and ``metadata``; shuffled when training."""
    import tensorflow as tf

    table = tf.constant(features)
    meta = None if metadata is None else tf.constant(metadata)
    ds = tf.data.Dataset.from_tensor_slices((rows, labels))
    if training:
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)

    def gather(i: Any, y: Any) -> tuple[Any, Any]:
        x = tf.gather(table, i)
        if meta is not None:
            x = {"features": x, "metadata": tf.gather(meta, i)}
        return x, tf.one_hot(y, len(CLASSES))

    return steady(ds.batch(batch_size).map(gather, num_parallel_calls=batch_parallelism()))
