"""The tf.data input pipeline.

Each distinct image is decoded and resized once, in parallel (``tf.data`` with AUTOTUNE),
into one uint8 array held in memory; oversampled copies are just repeated row indices into
it, so duplicating minority images costs no decoding and no memory. Training batches are
shuffled and augmented (flips, rotation, zoom, colour jitter); validation and test batches
never are. Training and validation batches run with tf.data's autotuner off (see
:func:`steady`). With ``input.metadata`` each image also
carries its encoded age, sex and body site (skinlesion.model.metadata), dropped to "unknown" in a
fraction ``input.metadata_dropout`` of training examples so that the model also works
without them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skinlesion.config.schema import AugmentSettings, InputSettings
from skinlesion.labels import CLASSES
from skinlesion.model.metadata import encode_metadata
from skinlesion.model.preprocessing import decode_image_bytes, prepare_images
from skinlesion.progress import progress


@dataclass
class ImageTable:
    """Decoded images (N, H, W, 3 uint8), the image_id of each row and its encoded
    metadata (N, METADATA_DIM float32)."""

    images: np.ndarray
    image_ids: list[str]
    metadata: np.ndarray

    def rows(self, image_ids: Sequence[str]) -> np.ndarray:
        """Row index of each image_id (repeats allowed: oversampled copies)."""
        position = {image_id: i for i, image_id in enumerate(self.image_ids)}
        return np.array([position[i] for i in image_ids], dtype=np.int64)


def _parallelism(workers: int | str) -> int:
    import tensorflow as tf

    return tf.data.AUTOTUNE if str(workers).lower() == "autotune" else int(workers)


def steady(dataset: Any) -> Any:
    """``dataset`` prefetching two batches, with tf.data's autotuner off.

    The autotuner runs a model thread per iterator, and destroying the iterator waits out
    that thread's current sleep, which doubles up to 60 s (TensorFlow 2.21). Keras makes a
    new iterator every epoch, so on the 2-core host one epoch of the CNN in two sat idle
    for about 35 s (45 s of work). The maps of a batch pipeline therefore take a fixed
    :func:`batch_parallelism`; with them an epoch took 40-43 s, none idle.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(2).with_options(options)


def batch_parallelism() -> int:
    """Parallel calls of a batch pipeline's maps: one per CPU core (see :func:`steady`)."""
    return os.cpu_count() or 1


def decode_images(
    data_dir: str | Path, frame: pd.DataFrame, settings: InputSettings, batch_size: int = 256
) -> ImageTable:
    """Decode and resize every distinct image of ``frame`` once, in parallel, with the
    operations a saved model carries (skinlesion.model.preprocessing)."""
    import tensorflow as tf

    unique = frame.drop_duplicates("image_id")
    paths = [str(Path(data_dir) / p) for p in unique["image_path"]]
    size = settings.image_size

    def load(path: tf.Tensor) -> tf.Tensor:
        image = decode_image_bytes(tf.io.read_file(path))
        return tf.cast(prepare_images(image, size, settings.center_crop), tf.uint8)

    dataset = (
        tf.data.Dataset.from_tensor_slices(paths)
        .map(load, num_parallel_calls=_parallelism(settings.decode_workers), deterministic=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    n_batches = -(-len(paths) // batch_size)
    chunks = [b.numpy() for b in progress(dataset, total=n_batches, desc="decoding images")]
    images = np.concatenate(chunks) if chunks else np.zeros((0, size, size, 3), np.uint8)
    return ImageTable(images, list(unique["image_id"]), encode_metadata(unique))


def augmentation_layers(settings: AugmentSettings, seed: int) -> list[Any]:
    """Keras preprocessing layers for the enabled transforms, applied to training batches."""
    import keras

    layers: list[Any] = []
    if settings.flip and settings.flip != "none":
        layers.append(keras.layers.RandomFlip(settings.flip, seed=seed))
    if settings.rotation:
        layers.append(
            keras.layers.RandomRotation(settings.rotation, fill_mode="reflect", seed=seed)
        )
    if settings.zoom:
        layers.append(keras.layers.RandomZoom(settings.zoom, fill_mode="reflect", seed=seed))
    if settings.brightness:
        layers.append(
            keras.layers.RandomBrightness(settings.brightness, value_range=(0, 255), seed=seed)
        )
    if settings.contrast:
        layers.append(
            keras.layers.RandomContrast(settings.contrast, value_range=(0, 255), seed=seed)
        )
    if settings.saturation:
        low, high = max(0.0, 0.5 - settings.saturation), min(1.0, 0.5 + settings.saturation)
        layers.append(keras.layers.RandomSaturation((low, high), value_range=(0, 255), seed=seed))
    return layers


def make_dataset(
    table: ImageTable,
    rows: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    training: bool,
    settings: InputSettings,
    seed: int = 0,
) -> Any:
    """A batched ``tf.data.Dataset`` of (float32 images in 0..255, one-hot labels); with
    ``settings.metadata`` the first element is {"image": ..., "metadata": ...}.

    Training: shuffled every epoch and augmented. Otherwise: fixed order, no augmentation.
    """
    import tensorflow as tf

    # A variable, not a constant: a captured constant is serialised into the dataset graph,
    # which breaks past 2 GB (large images on the cluster).
    images = tf.Variable(table.images, trainable=False, name="decoded_images")
    metadata = tf.constant(table.metadata)
    n_classes = len(CLASSES)
    dataset = tf.data.Dataset.from_tensor_slices((rows, labels))
    if training:
        dataset = dataset.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)

    def gather(idx: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        image = tf.cast(tf.gather(images, idx), tf.float32)
        return image, tf.gather(metadata, idx), tf.one_hot(y, n_classes)

    dataset = dataset.map(gather, num_parallel_calls=batch_parallelism())
    augment = None
    if training and (layers := augmentation_layers(settings.augment, seed)):
        import keras

        augment = keras.Sequential(layers, name="augment")
    dropout = float(settings.metadata_dropout) if training else 0.0

    def finish(x: tf.Tensor, m: tf.Tensor, y: tf.Tensor) -> tuple[Any, tf.Tensor]:
        if augment is not None:
            x = tf.clip_by_value(augment(x, training=True), 0.0, 255.0)
        if not settings.metadata:
            return x, y
        if dropout > 0:  # some examples as if nothing about the patient were known
            keep = tf.random.uniform((tf.shape(m)[0], 1), seed=seed) >= dropout
            m = m * tf.cast(keep, m.dtype)
        return {"image": x, "metadata": m}, y

    return steady(dataset.map(finish, num_parallel_calls=batch_parallelism()))
