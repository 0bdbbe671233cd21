"""An ensemble of trained models saved as one model: raw images in, probabilities out,
like any model of this project, so evaluation, `predict`, the server, batch scoring,
monitoring and the promotion gate load it without knowing it is one.

Why an ensemble: the CNN and EfficientNet-Lite0 rank the classes differently and err on
different images (McNemar's p = 7e-6 on the test lesions), and the geometric mean of
their probabilities ranks better than either; a model that ranks better gives narrower
prediction sets at the same coverage, so fewer patients are referred.

The saved graph: each member as it was trained, with its own preprocessing (its input
size and crop) and its softmax (calibrated, when ``train.calibration`` scaled it), then
:class:`CombineMembers`:

* each member's operating-point offsets are taken back off (the member's reliability
  records them), so what is combined is its own (calibrated) probabilities;
* ``geometric``: the mean of the log-probabilities, renormalised (a product of experts:
  a class either member rules out stays unlikely); ``arithmetic``: the mean of the
  probabilities;
* the ensemble's own melanoma offsets are added (its operating point, fitted on
  validation like a model's, :mod:`skinlesion.training.ensemble`).

Its pooled features are the members' side by side, so the out-of-distribution distance
and the drift monitor's embeddings see both networks (:func:`feature_probe`).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from skinlesion.labels import CLASSES
from skinlesion.model.metadata import METADATA_DIM, uses_metadata
from skinlesion.model.preprocessing import core_of, preprocessing_of, with_preprocessing
from skinlesion.model.reliability import feature_model, pooled_feature_layer, reliability_of

COMBINE_LAYER = "combine_members"
# The reliability's ``feature_layer`` of an ensemble: its features are its members'.
MEMBER_FEATURES = "members"


def member_layer(name: str) -> str:
    """The name of a member's sub-model inside the ensemble."""
    return f"member_{name}"


@functools.cache
def _layer_class() -> type:
    """The Keras layer class, defined and registered on first use (see
    :func:`skinlesion.model.layers.register_layers`)."""
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="skinlesion", name="CombineMembers")
    class CombineMembers(keras.layers.Layer):
        """The members' probabilities (a list) in, the ensemble's out; the members'
        offsets and the ensemble's own are weights, the rule and names configuration."""

        def __init__(self, members: list[str], combine: str, **kwargs: Any) -> None:
            kwargs["trainable"] = False
            kwargs["dtype"] = "float32"
            super().__init__(**kwargs)
            self.members = list(members)
            self.combine = str(combine)
            k = len(CLASSES)
            self.member_offsets = self.add_weight(
                shape=(len(self.members), k), initializer="zeros", trainable=False,
                name="member_offsets",
            )  # fmt: skip
            self.offsets = self.add_weight(
                shape=(k,), initializer="zeros", trainable=False, name="offsets"
            )

        def call(self, probs: list[Any]) -> Any:
            logs = [
                ops.log_softmax(
                    ops.log(ops.clip(ops.cast(p, "float32"), 1e-12, 1.0)) - self.member_offsets[i],
                    axis=-1,
                )
                for i, p in enumerate(probs)
            ]
            stacked = ops.stack(logs, axis=0)
            if self.combine == "geometric":
                z = ops.mean(stacked, axis=0)
            else:
                z = ops.log(ops.mean(ops.exp(stacked), axis=0))
            return ops.softmax(z + self.offsets, axis=-1)

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape[0]

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "members": self.members, "combine": self.combine}

    return CombineMembers


def register() -> None:
    """Make saved ensembles loadable."""
    _layer_class()


def build_ensemble(members: dict[str, Any], combine: str) -> Any:
    """One model from trained, self-contained ``members`` (name -> loaded model): raw
    images (and metadata, if a member reads it) in, combined probabilities out, with the
    ensemble's offsets at zero. The members' reliability layers are left out (the
    ensemble gets its own); their networks and preprocessing are kept as they are."""
    import keras

    image = keras.Input((None, None, 3), dtype="uint8", name="image")
    nets = {name: _network(name, model) for name, model in members.items()}
    with_meta = any(uses_metadata(net) for net in nets.values())
    metadata = keras.Input((METADATA_DIM,), name="metadata") if with_meta else None
    inputs = {"image": image, "metadata": metadata} if with_meta else image
    outputs = [_call(net, image, metadata) for net in nets.values()]
    layer = _layer_class()(list(members), combine, name=COMBINE_LAYER)
    combined = layer(outputs)
    layer.member_offsets.assign(
        np.stack([_member_offsets(model) for model in members.values()]).astype("float32")
    )
    return keras.Model(inputs, combined, name="skinlesion")


def _network(name: str, model: Any) -> Any:
    prepared = preprocessing_of(model)
    if prepared is None or reliability_of(model) is None:
        raise ValueError(f"member {name} is not a self-contained model of this version")
    return with_preprocessing(core_of(model), *prepared, name=member_layer(name))


def _member_offsets(model: Any) -> np.ndarray:
    recorded = reliability_of(model).decision_offsets  # type: ignore[union-attr]
    return np.asarray(recorded or np.zeros(len(CLASSES)), dtype="float64")


def _call(net: Any, image: Any, metadata: Any | None) -> Any:
    if uses_metadata(net):
        return net({"image": image, "metadata": metadata})
    return net(image)


def is_ensemble(model: Any) -> bool:
    return any(layer.name == COMBINE_LAYER for layer in getattr(model, "layers", []))


def members_of(model: Any) -> list[str]:
    """The member names of an ensemble, in order; [] for a single model."""
    if not is_ensemble(model):
        return []
    return list(model.get_layer(COMBINE_LAYER).members)


def member(model: Any, name: str) -> Any:
    """One member's self-contained sub-model (raw images in, its probabilities out)."""
    return model.get_layer(member_layer(name))


def set_offsets(model: Any, offsets: np.ndarray) -> None:
    """The ensemble's own operating point (added to its combined log-probabilities)."""
    model.get_layer(COMBINE_LAYER).offsets.assign(np.asarray(offsets, dtype="float32"))


def feature_probe(model: Any, portable: bool = False) -> Any:
    """The ensemble with two outputs: its members' pooled image features side by side,
    and its probabilities (``portable``: see
    :func:`skinlesion.model.preprocessing.portable_prepare_images`)."""
    import keras

    image = keras.Input((None, None, 3), dtype="uint8", name="image")
    with_meta = uses_metadata(model)
    metadata = keras.Input((METADATA_DIM,), name="metadata") if with_meta else None
    features, probs = [], []
    for name in members_of(model):
        net = member(model, name)
        core = core_of(net)
        size, crop = preprocessing_of(net)  # type: ignore[misc]
        probe = with_preprocessing(
            feature_model(core, pooled_feature_layer(core)),
            size,
            crop,
            name=f"probe_{name}",
            portable=portable,
        )
        f, p = _call(probe, image, metadata)
        features.append(f)
        probs.append(p)
    joined = keras.layers.Concatenate(name="member_features")(features)
    combined = model.get_layer(COMBINE_LAYER)(probs)
    inputs = {"image": image, "metadata": metadata} if with_meta else image
    return keras.Model(inputs, [joined, combined], name="ensemble_probe")
