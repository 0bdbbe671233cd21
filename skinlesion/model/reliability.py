"""What a model says about how far to trust each of its answers, carried in the model.

Three things are fitted at training on data the model did not learn from
(:mod:`skinlesion.training.reliability`) and saved inside the ``.keras`` file, as the
weights and configuration of an identity layer on the model's output (:func:`attach`):

* the **calibration scores** of the conformal prediction sets (:mod:`skinlesion.model.conformal`);
* the **feature distance** to the training images and its threshold (:mod:`skinlesion.model.ood`);
* the **input contract** of data validation (:mod:`skinlesion.data.contract`), and what to
  do with an image that breaks it (``refuse``: an error naming the rule; ``refer``).

Why inside the model: evaluation, `predict`, the promotion gate and the server all load
the same file, so they give the same sets and the same referrals, and a registered
version keeps the calibration it was promoted with. A model saved without the layer
(before this existed) still predicts; it has no sets.

:meth:`Reliability.assess` turns probabilities and features into each answer's
``prediction_set``, ``refer`` and ``refer_reason``. An answer is referred to a clinician
when the image breaks the contract (under ``refer``), when it is out of distribution,
when its set is not one class, or when melanoma is in its set (``refer_melanoma``). The
decision at the melanoma operating point (the ``prediction``) is not changed by any of it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from skinlesion.config.schema import ReliabilitySettings
from skinlesion.data.contract import InputContract
from skinlesion.errors import SkinlesionError
from skinlesion.labels import CLASSES
from skinlesion.model.confidence import log_probs_of, softmax
from skinlesion.model.conformal import prediction_sets, true_class_scores
from skinlesion.model.ood import FeatureDistance

RELIABILITY_LAYER = "reliability"
MEL = CLASSES.index("mel")
InvalidInput = Literal["refuse", "refer"]


@dataclass(frozen=True)
class Assessment:
    """Per image: the conformal set (n x K booleans), the out-of-distribution score, and
    whether and why the answer is referred; ``alpha``, the miscoverage the sets promise
    (what a report of their coverage compares with)."""

    sets: np.ndarray
    ood: np.ndarray
    refer: np.ndarray
    reasons: list[str]
    alpha: float

    def prediction_set(self, row: int) -> list[str]:
        return [c for c, inside in zip(CLASSES, self.sets[row], strict=True) if inside]


class InputContractError(SkinlesionError, ValueError):
    """An image breaks the input contract of a model that refuses such images."""


@dataclass(frozen=True)
class Reliability:
    """The fitted parts of a model's reliability (see the module's docstring)."""

    alpha: float
    cal_scores: np.ndarray
    cal_labels: np.ndarray
    distance: FeatureDistance
    ood_threshold: float
    refer_melanoma: bool
    contract: InputContract
    invalid_input: InvalidInput
    feature_layer: str
    # How the probabilities were made from the network's logits z: softmax(scale * z +
    # shift + offsets), the calibration (skinlesion.model.confidence) and the operating
    # point; empty for a model saved before they were recorded.
    calibration_scale: tuple[float, ...] = ()
    calibration_shift: tuple[float, ...] = ()
    decision_offsets: tuple[float, ...] = ()

    def _shifts(self, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scale = np.asarray(self.calibration_scale or np.ones(n_classes), dtype="float64")
        shift = np.asarray(self.calibration_shift or np.zeros(n_classes), dtype="float64")
        offsets = np.asarray(self.decision_offsets or np.zeros(n_classes), dtype="float64")
        return scale, shift, offsets

    def without_offsets(self, probs: np.ndarray) -> np.ndarray:
        """The calibrated probabilities before the operating point's offsets: what an
        ensemble combines."""
        _, _, offsets = self._shifts(probs.shape[1])
        return softmax(log_probs_of(probs) - offsets)

    def uncalibrated(self, probs: np.ndarray) -> np.ndarray:
        """The network's own probabilities, before calibration and operating point: what
        evaluation reports the calibration error of, beside the calibrated one."""
        scale, shift, offsets = self._shifts(probs.shape[1])
        return softmax((log_probs_of(probs) - offsets - shift) / scale)

    @classmethod
    def fit(
        cls,
        reference: tuple[np.ndarray, np.ndarray],
        calibration: tuple[np.ndarray, np.ndarray, np.ndarray],
        settings: ReliabilitySettings,
        contract: InputContract,
        feature_layer: str,
        adjustments: dict[str, list[float]] | None = None,
    ) -> Reliability:
        """Fit from the (features, labels) of ``reference`` images (what the model learnt
        from) and the (features, probabilities, labels) of ``calibration`` images (held
        out from training): the calibration scores, the feature distance, and its
        threshold at the ``1 - ood_false_refer`` quantile of the calibration distances.
        ``adjustments`` records how the probabilities were made (``calibration_scale``,
        ``calibration_shift``, ``decision_offsets``: K floats each)."""
        ref_features, ref_labels = reference
        cal_features, cal_probs, cal_labels = calibration
        distance = FeatureDistance.fit(ref_features, ref_labels, len(CLASSES))
        threshold = np.quantile(distance.score(cal_features), 1 - settings.ood_false_refer)
        return cls(
            alpha=settings.alpha,
            cal_scores=true_class_scores(cal_probs, cal_labels),
            cal_labels=np.asarray(cal_labels, dtype=int),
            distance=distance,
            ood_threshold=float(threshold),
            refer_melanoma=settings.refer_melanoma,
            contract=contract,
            invalid_input=settings.invalid_input,
            feature_layer=feature_layer,
            **{k: tuple(float(v) for v in values) for k, values in (adjustments or {}).items()},
        )

    def screen(self, raw: bytes) -> list[str]:
        """The contract rules an encoded image breaks (read from its header), as referral
        reasons; under ``invalid_input: refuse`` an image that breaks any is refused
        instead (:class:`InputContractError`, naming the rules). Every path that reads
        image bytes (the server, `predict`) screens them here, before the model runs."""
        broken = self.contract.check_bytes(raw)
        if broken and self.invalid_input == "refuse":
            raise InputContractError("; ".join(broken))
        return [f"input contract: {rule}" for rule in broken]

    def sets(self, probs: np.ndarray) -> np.ndarray:
        return prediction_sets(self.cal_scores, self.cal_labels, probs, self.alpha)

    def assess(
        self,
        probs: np.ndarray,
        features: np.ndarray,
        violations: list[list[str]] | None = None,
    ) -> Assessment:
        """Sets, scores and referrals of n images; ``violations`` lists each image's
        broken contract rules (from its header), if it was read from bytes."""
        sets = self.sets(probs)
        ood = self.distance.score(features)
        reasons = []
        for row in range(len(probs)):
            found = list(violations[row]) if violations else []
            if ood[row] > self.ood_threshold:
                found.append(
                    f"out of distribution: feature distance {ood[row]:.1f} is above "
                    f"{self.ood_threshold:.1f}, beyond the training lesions"
                )
            size = int(sets[row].sum())
            if size == 0:
                found.append("no class fits at this confidence (empty prediction set)")
            elif size > 1:
                found.append(f"{size} classes cannot be ruled out at {1 - self.alpha:.0%}")
            if self.refer_melanoma and sets[row, MEL]:
                found.append("melanoma cannot be ruled out")
            reasons.append("; ".join(found))
        refer = np.array([bool(r) for r in reasons], dtype=bool)
        return Assessment(sets=sets, ood=ood, refer=refer, reasons=reasons, alpha=self.alpha)


@functools.cache
def _layer_class() -> type:
    """The Keras layer class, defined and registered on first use (see
    :func:`skinlesion.model.layers.register_layers`)."""
    import keras

    @keras.saving.register_keras_serializable(package="skinlesion", name="Reliability")
    class ReliabilityLayer(keras.layers.Layer):
        """Identity on the class probabilities; holds the fitted reliability as weights
        (calibration scores and labels, whitened class centres, whitening matrix) and
        configuration (everything else)."""

        def __init__(self, settings: dict[str, Any], **kwargs: Any) -> None:
            kwargs["trainable"] = False
            super().__init__(**kwargs)
            self.settings = dict(settings)
            n_cal = int(self.settings["n_calibration"])
            dim = int(self.settings["n_features"])
            shapes = {
                "cal_scores": (n_cal,),
                "cal_labels": (n_cal,),
                "centres": (len(CLASSES), dim),
                "whitening": (dim, dim),
            }
            self.stored = {
                name: self.add_weight(
                    shape=shape, initializer="zeros", trainable=False, name=name, dtype="float32"
                )
                for name, shape in shapes.items()
            }

        def call(self, probs: Any) -> Any:
            return probs

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "settings": self.settings}

    return ReliabilityLayer


def register() -> None:
    """Make saved models that hold the reliability layer loadable."""
    _layer_class()


def attach(model: Any, reliability: Reliability) -> Any:
    """``model`` (raw images in, probabilities out) with ``reliability`` stored in an
    identity layer on its output: the model to save."""
    import keras

    settings = {
        "alpha": reliability.alpha,
        "ood_threshold": reliability.ood_threshold,
        "refer_melanoma": reliability.refer_melanoma,
        "min_width": reliability.contract.min_width,
        "min_height": reliability.contract.min_height,
        "modes": list(reliability.contract.modes),
        "age_min": reliability.contract.age_min,
        "age_max": reliability.contract.age_max,
        "invalid_input": reliability.invalid_input,
        "feature_layer": reliability.feature_layer,
        "n_calibration": len(reliability.cal_scores),
        "n_features": reliability.distance.whitening.shape[0],
        "calibration_scale": list(reliability.calibration_scale),
        "calibration_shift": list(reliability.calibration_shift),
        "decision_offsets": list(reliability.decision_offsets),
    }
    layer = _layer_class()(settings, name=RELIABILITY_LAYER)
    outputs = layer(model.output)
    values = {
        "cal_scores": reliability.cal_scores,
        "cal_labels": reliability.cal_labels,
        "centres": reliability.distance.centres,
        "whitening": reliability.distance.whitening,
    }
    for name, variable in layer.stored.items():
        variable.assign(np.asarray(values[name], dtype="float32"))
    return keras.Model(model.input, outputs, name=model.name)


def reliability_of(model: Any) -> Reliability | None:
    """The reliability a model carries, else None (a model saved before models did)."""
    for layer in getattr(model, "layers", []):
        if layer.name == RELIABILITY_LAYER:
            s = layer.settings
            stored = {name: np.asarray(v.numpy()) for name, v in layer.stored.items()}
            return Reliability(
                alpha=float(s["alpha"]),
                cal_scores=stored["cal_scores"].astype("float64"),
                cal_labels=np.rint(stored["cal_labels"]).astype(int),
                distance=FeatureDistance(
                    centres=stored["centres"].astype("float64"),
                    whitening=stored["whitening"].astype("float64"),
                ),
                ood_threshold=float(s["ood_threshold"]),
                refer_melanoma=bool(s["refer_melanoma"]),
                contract=InputContract(
                    int(s["min_width"]),
                    int(s["min_height"]),
                    tuple(s["modes"]),
                    age_min=float(s.get("age_min", 0.0)),
                    age_max=float(s.get("age_max", math.inf)),
                ),
                invalid_input=s["invalid_input"],
                feature_layer=str(s["feature_layer"]),
                **{
                    key: tuple(float(v) for v in s.get(key, ()))
                    for key in ("calibration_scale", "calibration_shift", "decision_offsets")
                },
            )
    return None


def pooled_feature_layer(core: Any) -> str:
    """The name of the classifier's last global-average-pooling layer: its image features."""
    import keras

    for layer in reversed(core.layers):
        if isinstance(layer, keras.layers.GlobalAveragePooling2D):
            return layer.name
    raise ValueError(f"model {core.name} has no global average pooling layer")


def feature_model(core: Any, feature_layer: str) -> Any:
    """``core`` with two outputs: its pooled image features and its probabilities."""
    import keras

    return keras.Model(core.input, [core.get_layer(feature_layer).output, core.output])
