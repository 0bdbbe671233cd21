"""The networks of the study's models (their training is in skinlesion.training.recipes):
the CNN from scratch, and transfer models (an ImageNet trunk, pooled, under a new head:
ResNet152V2 here, EfficientNet-Lite in skinlesion.model.efficientnet_lite).

All take float RGB images in 0..255 of shape (size, size, 3) and end in a float32
softmax over the 7 classes (float32 even under mixed precision, for stable losses).
Normalisation is part of each network; cropping and resizing are put in front of it when
the model is saved (skinlesion.model.preprocessing), so a saved ``.keras`` file takes raw images
and is all a user needs.
With ``metadata_dim`` > 0 a model also takes the encoded patient metadata
(skinlesion.model.metadata) as a second input named ``metadata``, joined to the image features
just before the softmax layer: its logits are the image's plus a linear term in the
metadata (late fusion), and the softmax layer stays the one that holds the decision bias.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from skinlesion.config.schema import CnnSettings, EfficientNetLiteSettings, ResNetSettings
from skinlesion.errors import SkinlesionError
from skinlesion.labels import CLASSES


class ModelWeightsError(SkinlesionError, RuntimeError):
    """Backbone weights could not be loaded; the message says what to do."""


def _classifier(x: Any, meta: Any | None, n_classes: int) -> Any:
    """The softmax layer ``probs`` over the features, joined with the metadata if any."""
    from keras import layers

    if meta is not None:
        x = layers.Concatenate(name="with_metadata")([x, meta])
    return layers.Dense(n_classes, activation="softmax", dtype="float32", name="probs")(x)


def _metadata_input(metadata_dim: int) -> Any | None:
    import keras

    return keras.Input((metadata_dim,), name="metadata") if metadata_dim else None


def build_cnn(
    cfg: CnnSettings, image_size: int, n_classes: int = len(CLASSES), metadata_dim: int = 0
) -> Any:
    """A CNN from scratch: per entry of ``filters``, ``convs_per_block`` 3x3 convs with batch
    norm and ReLU, then a max-pool; then global average pooling, dropout and a dense layer."""
    import keras
    from keras import layers

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for i, filters in enumerate(cfg.filters):
        for j in range(cfg.convs_per_block):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{i}_conv{j}")(
                x
            )
            x = layers.BatchNormalization(momentum=cfg.bn_momentum, name=f"block{i}_bn{j}")(x)
            x = layers.Activation("relu", name=f"block{i}_relu{j}")(x)
        x = layers.MaxPooling2D(name=f"block{i}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(cfg.dropout, name="dropout")(x)
    x = layers.Dense(cfg.dense_units, activation="relu", name="dense")(x)
    meta = _metadata_input(metadata_dim)
    outputs = _classifier(x, meta, n_classes)
    model_inputs = inputs if meta is None else {"image": inputs, "metadata": meta}
    return keras.Model(model_inputs, outputs, name="cnn")


def build_backbone(weights: str, image_size: int) -> Any:
    """ResNet152V2 without its top (spatial output, so Grad-CAM can look at it), with
    ``weights`` = 'imagenet', 'none' or a path to a weights file (e.g. Keras's
    ``..._notop.h5`` or a ``.weights.h5`` saved from this backbone)."""
    import keras

    kind = str(weights).lower()
    shape = (image_size, image_size, 3)
    if kind == "imagenet":
        try:
            return keras.applications.ResNet152V2(
                include_top=False, weights="imagenet", input_shape=shape, pooling=None
            )
        except Exception as err:  # Keras raises plain Exception on a failed download
            raise ModelWeightsError(
                f"could not get the ImageNet weights of ResNet152V2 ({err}). Without internet, "
                "download resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5 elsewhere and "
                "set train.resnet152v2.weights to its path (or put it in ~/.keras/models/)."
            ) from err
    backbone = keras.applications.ResNet152V2(
        include_top=False, weights=None, input_shape=shape, pooling=None
    )
    if kind in ("none", "null", ""):
        return backbone
    path = Path(weights)
    if not path.is_file():
        raise ModelWeightsError(f"weights file not found: {path}")
    try:
        backbone.load_weights(str(path))
    except Exception as err:  # h5py / Keras raise various types for a wrong file
        raise ModelWeightsError(
            f"{path} does not hold ResNet152V2 backbone weights (include_top=False): {err}"
        ) from err
    return backbone


def build_head(
    cfg: ResNetSettings | EfficientNetLiteSettings,
    n_features: int,
    n_classes: int = len(CLASSES),
    metadata_dim: int = 0,
) -> Any:
    """The new classification head, trainable on its own over cached backbone features;
    ``head_dense_units`` 0 puts the softmax right on the (dropped-out) features."""
    import keras
    from keras import layers

    inputs = keras.Input((n_features,), name="features")
    x = layers.Dropout(cfg.dropout, name="head_dropout0")(inputs)
    if cfg.head_dense_units:
        x = layers.Dense(cfg.head_dense_units, activation="relu", name="head_dense")(x)
        x = layers.Dropout(cfg.dropout, name="head_dropout1")(x)
    meta = _metadata_input(metadata_dim)
    outputs = _classifier(x, meta, n_classes)
    head_inputs = inputs if meta is None else {"features": inputs, "metadata": meta}
    return keras.Model(head_inputs, outputs, name="head")


def build_transfer_model(
    backbone: Any,
    head: Any,
    image_size: int,
    metadata_dim: int = 0,
    name: str = "transfer",
    preprocess: Any | None = None,
) -> Any:
    """Image in 0..255 -> ``preprocess`` (if the backbone does not scale its own input) ->
    backbone -> pooling (``avg_pool``) -> head (with the metadata, if ``metadata_dim``)."""
    import keras
    from keras import layers

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = backbone(preprocess(inputs) if preprocess is not None else inputs)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    meta = _metadata_input(metadata_dim)
    if meta is None:
        return keras.Model(inputs, head(x), name=name)
    return keras.Model(
        {"image": inputs, "metadata": meta}, head({"features": x, "metadata": meta}), name=name
    )


def build_resnet152v2(backbone: Any, head: Any, image_size: int, metadata_dim: int = 0) -> Any:
    """The ResNet152V2 transfer model, with ResNetV2's input scaling (to -1..1)."""
    from keras import layers

    scale = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="resnet_v2_preprocess")
    return build_transfer_model(backbone, head, image_size, metadata_dim, "resnet152v2", scale)


def unfreeze_top(backbone: Any, first_layer_prefix: str) -> int:
    """Make layers from the first one named ``first_layer_prefix*`` on trainable (batch
    norm layers stay frozen, as usual for fine-tuning); returns how many are trainable."""
    import keras

    backbone.trainable = True
    trainable = False
    count = 0
    for layer in backbone.layers:
        trainable = trainable or layer.name.startswith(first_layer_prefix)
        layer.trainable = trainable and not isinstance(layer, keras.layers.BatchNormalization)
        count += int(layer.trainable)
    if count == 0:
        raise ValueError(f"no backbone layer starts with {first_layer_prefix!r}")
    return count


def _find_layer(model: Any, name: str) -> Any:
    """A layer by name, also inside nested models (the ResNet head)."""
    for layer in model.layers:
        if layer.name == name:
            return layer
        if hasattr(layer, "layers"):
            found = _find_layer(layer, name)
            if found is not None:
                return found
    return None


def scale_logits(model: Any, scale: np.ndarray, shift: np.ndarray) -> Any:
    """Replace the logits ``z`` of the softmax layer ``probs`` by ``scale * z + shift``
    (per class), folded into its kernel and bias: a fitted calibration
    (:mod:`skinlesion.model.confidence`) that every consumer of the saved model sees."""
    layer = _find_layer(model, "probs")
    if layer is None:
        raise ValueError("the model has no 'probs' output layer")
    kernel, bias = layer.get_weights()
    scale = np.asarray(scale, dtype=kernel.dtype)
    layer.set_weights([kernel * scale, bias * scale + np.asarray(shift, dtype=bias.dtype)])
    return model


def shift_decisions(model: Any, offsets: list[float]) -> Any:
    """Add per-class ``offsets`` to the bias of the softmax layer ``probs``.

    softmax(z + b) = softmax(log softmax(z) + b): the same decision shift as adding the
    offsets to the log-probabilities, with built-in layers only, so the saved model loads
    anywhere Keras does (no custom objects)."""
    layer = _find_layer(model, "probs")
    if layer is None:
        raise ValueError("the model has no 'probs' output layer")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias + np.asarray(offsets, dtype=bias.dtype)])
    return model
