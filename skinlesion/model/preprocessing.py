"""Image preprocessing that the model carries with it.

Training decodes each image once and keeps it at the model's input size
(skinlesion.training.inputs); a saved model must turn a raw photograph into that same
tensor wherever it is used, so the operations live in one place, here, and the saved
model holds them as its first layer (:class:`PrepareImages`): decode
(``tf.io.decode_image``), central square crop, antialiased resize, rounding to whole
0..255 values as the uint8 cache of training does. A saved model therefore takes raw
uint8 RGB images of any size and reads nothing from params.yaml.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skinlesion.errors import SkinlesionError
from skinlesion.progress import progress

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

PREPARE_LAYER = "prepare_images"


class ImageDecodeError(SkinlesionError, ValueError):
    """Bytes that are not an image this code can read."""


def decode_image_bytes(contents: Any) -> Any:
    """An RGB uint8 tensor (H, W, 3) from encoded image bytes (JPEG, PNG, BMP, GIF)."""
    import tensorflow as tf

    return tf.io.decode_image(contents, channels=3, expand_animations=False)


def read_image(contents: bytes) -> Any:
    """A numpy (H, W, 3) uint8 image from encoded bytes, or :class:`ImageDecodeError`."""
    import tensorflow as tf

    try:
        return decode_image_bytes(tf.constant(contents)).numpy()
    except (tf.errors.InvalidArgumentError, ValueError) as err:
        raise ImageDecodeError(f"not a readable image ({len(contents)} bytes)") from err


def prepare_images(images: Any, size: int, center_crop: bool) -> Any:
    """One image (H, W, 3) or a batch (N, H, W, 3) to ``size`` x ``size`` float32 values
    in 0..255: central square first (when ``center_crop``), antialiased bilinear resize,
    rounded and clipped (the values a uint8 image would hold)."""
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    if center_crop:
        shape = tf.shape(images)
        height, width = shape[-3], shape[-2]
        side = tf.minimum(height, width)
        images = tf.image.crop_to_bounding_box(
            images, (height - side) // 2, (width - side) // 2, side, side
        )
    resized = tf.image.resize(tf.cast(images, tf.float32), (size, size), antialias=True)
    return tf.clip_by_value(tf.round(resized), 0.0, 255.0)


def _taps(in_size: Any, out_size: int) -> tuple[Any, Any, Any]:
    """(first input pixel, weights (out, taps), taps) of TensorFlow's antialiased bilinear
    resize along one axis (its ``ScaleAndTranslate`` op, triangle kernel), computed in
    float32 the way that op computes them."""
    import tensorflow as tf

    in_f = tf.cast(in_size, tf.float32)
    inv_scale = 1.0 / (float(out_size) / in_f)
    kernel_scale = tf.maximum(inv_scale, 1.0)
    sample = (tf.range(out_size, dtype=tf.float32) + 0.5) * inv_scale
    start = tf.clip_by_value(tf.math.ceil(sample - kernel_scale - 0.5), 0.0, in_f - 1.0)
    end = tf.clip_by_value(tf.math.floor(sample + kernel_scale - 0.5), 0.0, in_f - 1.0) + 1.0
    taps = tf.cast(tf.reduce_max(end - start), tf.int32)
    source = start[:, None] + tf.range(taps, dtype=tf.float32)[None, :]
    weights = tf.maximum(0.0, 1.0 - tf.abs((source + 0.5 - sample[:, None]) * (1.0 / kernel_scale)))
    weights = tf.where(source < end[:, None], weights, 0.0)
    weights = weights * (1.0 / tf.reduce_sum(weights, axis=1, keepdims=True))
    return tf.cast(start, tf.int32), weights, taps


def _resize_axis(images: Any, size: int, axis: int) -> Any:
    """``images`` (n, h, w, c float32) resized to ``size`` along ``axis`` (1 or 2): each
    output pixel the sum of weight x input pixel over its span, added in the span's order,
    one multiply and one add at a time, as ``ScaleAndTranslate`` adds them."""
    import tensorflow as tf

    in_size = tf.shape(images)[axis]
    start, weights, taps = _taps(in_size, size)
    shape = tf.unstack(tf.shape(images))
    shape[axis] = size
    column = [-1, 1, 1] if axis == 1 else [-1, 1]

    def add_tap(tap: Any, total: Any) -> tuple[Any, Any]:
        pixels = tf.gather(images, tf.minimum(start + tap, in_size - 1), axis=axis)
        return tap + 1, total + tf.reshape(weights[:, tap], column) * pixels

    _, resized = tf.while_loop(
        lambda tap, _: tap < taps, add_tap, [tf.constant(0), tf.zeros(tf.stack(shape))]
    )
    return resized


def portable_prepare_images(images: Any, size: int, center_crop: bool) -> Any:
    """:func:`prepare_images` for a batch (n, h, w, 3), in operations every converter knows:
    the graph that :mod:`skinlesion.model.export` writes. The resize is TensorFlow's own
    (``ScaleAndTranslate``, which ONNX and LiteRT lack) spelt out as a loop over the
    kernel's taps, weights and order of sums kept, so its values are the same to the bit
    (tests/code/test_export.py)."""
    import tensorflow as tf

    images = tf.cast(images, tf.float32)
    if center_crop:
        shape = tf.shape(images)
        side = tf.minimum(shape[1], shape[2])
        top, left = (shape[1] - side) // 2, (shape[2] - side) // 2
        images = images[:, top : top + side, left : left + side, :]
    resized = _resize_axis(_resize_axis(images, size, 1), size, 2)
    return tf.clip_by_value(tf.round(resized), 0.0, 255.0)


@functools.cache
def _layer_class() -> type:
    """The Keras layer class, defined and registered on first use (Keras is imported late
    everywhere in this package, so that the CLI starts fast)."""
    import keras

    @keras.saving.register_keras_serializable(package="skinlesion", name="PrepareImages")
    class PrepareImages(keras.layers.Layer):
        """:func:`prepare_images` as a layer: uint8 images of any size in, the model's
        input out."""

        def __init__(self, size: int, center_crop: bool, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.size = int(size)
            self.center_crop = bool(center_crop)

        portable = False  # set on a graph built for export, never saved

        def call(self, images: Any) -> Any:
            prepare = portable_prepare_images if self.portable else prepare_images
            return prepare(images, self.size, self.center_crop)

        def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
            return (input_shape[0], self.size, self.size, 3)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "size": self.size, "center_crop": self.center_crop}

    return PrepareImages


def register() -> None:
    """Make saved models that hold :class:`PrepareImages` loadable; loaders call
    :func:`skinlesion.model.layers.register_layers`, which registers every custom layer."""
    _layer_class()


def with_preprocessing(
    core: Any, size: int, center_crop: bool, name: str = "skinlesion", portable: bool = False
) -> Any:
    """The model to save and serve: raw uint8 ``image`` (N, H, W, 3), any H and W, plus the
    ``metadata`` input if ``core`` takes one -> :func:`prepare_images` -> ``core``;
    ``name`` tells it apart from another such model inside an ensemble. ``portable``: with
    :func:`portable_prepare_images`, for export (not to be saved)."""
    import keras

    from skinlesion.model.metadata import METADATA_DIM, uses_metadata

    image = keras.Input((None, None, 3), dtype="uint8", name="image")
    layer = _layer_class()(size, center_crop, name=PREPARE_LAYER)
    layer.portable = portable
    prepared = layer(image)
    if not uses_metadata(core):
        return keras.Model(image, core(prepared), name=name)
    metadata = keras.Input((METADATA_DIM,), name="metadata")
    outputs = core({"image": prepared, "metadata": metadata})
    return keras.Model({"image": image, "metadata": metadata}, outputs, name=name)


def preprocessing_of(model: Any) -> tuple[int, bool] | None:
    """(size, center_crop) of a model that carries its preprocessing, else None (a model
    saved before it did)."""
    for layer in getattr(model, "layers", []):
        if layer.name == PREPARE_LAYER:
            return layer.size, layer.center_crop
    return None


def core_of(model: Any) -> Any:
    """The classifier inside a self-contained model (what Grad-CAM looks into); a model
    without preprocessing is its own classifier."""
    import keras

    if preprocessing_of(model) is None:
        return model
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError("the model holds no classifier")


def read_images(data_dir: str | Path, frame: pd.DataFrame) -> Iterator[np.ndarray]:
    """Each row's image as it is on disk (uint8 RGB, its own size), decoded in parallel
    ahead of use, in row order: what a model that carries its preprocessing takes."""
    import tensorflow as tf

    paths = [str(Path(data_dir) / p) for p in frame["image_path"]]
    dataset = (
        tf.data.Dataset.from_tensor_slices(paths)
        .map(
            lambda path: decode_image_bytes(tf.io.read_file(path)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .prefetch(tf.data.AUTOTUNE)
    )
    for image in progress(dataset, total=len(paths), desc="predicting"):
        yield image.numpy()
