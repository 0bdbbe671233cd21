"""Running a model on raw images: the one path evaluation, `predict`, the gate and the
served model share, so that none of them can prepare an image differently, and all give
the same prediction sets and referrals (:mod:`skinlesion.model.reliability`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from skinlesion.labels import CLASSES
from skinlesion.model.metadata import model_inputs
from skinlesion.model.reliability import Assessment, feature_model, reliability_of


@dataclass(frozen=True)
class Scored:
    """Probabilities of n images and, for a model that carries its reliability, their
    sets and referrals and their pooled image features (None for a model saved before
    models did)."""

    probs: np.ndarray
    assessment: Assessment | None
    features: np.ndarray | None = None


def _batches(images: Iterable[np.ndarray], batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, stacked batch): consecutive images of one size, at most ``batch_size``."""
    batch: list[np.ndarray] = []
    start = 0
    for image in images:
        if batch and (image.shape != batch[0].shape or len(batch) == batch_size):
            yield start, np.stack(batch)
            start += len(batch)
            batch = []
        batch.append(np.asarray(image, dtype=np.uint8))
    if batch:
        yield start, np.stack(batch)


def _flips(x: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(v) for v in (x[:, :, ::-1], x[:, ::-1, :], x[:, ::-1, ::-1])]


def _run(
    model: Any,
    images: Iterable[np.ndarray],
    metadata: np.ndarray | None,
    batch_size: int,
    tta: bool,
    first_view: Callable[[Any], tuple[np.ndarray, np.ndarray | None]],
) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities (mean over the flips with ``tta``) and the features that
    ``first_view`` returns for the image as given, batch by batch."""
    probs_out: list[np.ndarray] = []
    features_out: list[np.ndarray] = []
    for start, x in _batches(images, batch_size):
        meta = None if metadata is None else metadata[start : start + len(x)]
        probs, features = first_view(model_inputs(model, x, meta))
        views = [np.asarray(probs)]
        if tta:
            views += [
                np.asarray(model.predict_on_batch(model_inputs(model, v, meta))) for v in _flips(x)
            ]
        probs_out.append(np.mean(views, axis=0))
        if features is not None:
            features_out.append(np.asarray(features))
    if not probs_out:
        return np.zeros((0, len(CLASSES)), dtype="float64"), None
    features_all = np.concatenate(features_out).astype("float64") if features_out else None
    return np.concatenate(probs_out).astype("float64"), features_all


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
    return Scorer(model).score(images, metadata, batch_size, tta).probs


def probe_outputs(
    model: Any,
    probe: Any,
    images: Iterable[np.ndarray],
    metadata: np.ndarray | None,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(features, probabilities) of raw images through a two-output ``probe`` of
    ``model`` (:func:`feature_probe_of`), batch by batch."""

    def first_view(x: Any) -> tuple[np.ndarray, np.ndarray]:
        features, probs = probe.predict_on_batch(x)
        return probs, features

    probs, features = _run(model, images, metadata, batch_size, False, first_view)
    if features is None:
        features = np.zeros((0, 0))
    return features, probs


def feature_probe_of(model: Any, feature_layer: str, portable: bool = False) -> Any:
    """``model`` with two outputs, its pooled image features and its probabilities: an
    ensemble's are its members' (:mod:`skinlesion.model.ensemble`), a single model's come
    from its ``feature_layer``, each behind the model's own preprocessing (``portable``:
    in operations an exported graph can hold, :mod:`skinlesion.model.export`)."""
    from skinlesion.model.ensemble import feature_probe, is_ensemble
    from skinlesion.model.preprocessing import core_of, preprocessing_of, with_preprocessing

    if is_ensemble(model):
        return feature_probe(model, portable)
    prepared = preprocessing_of(model)
    if prepared is None:  # attach() only ever wraps a self-contained model
        raise ValueError("a model that carries its reliability carries its preprocessing")
    size, crop = prepared
    return with_preprocessing(
        feature_model(core_of(model), feature_layer), size, crop, portable=portable
    )


class Scorer:
    """A model ready to score: its reliability read and its two-output probe (features
    and probabilities) built once, so that a server answering request after request does
    not rebuild and retrace it each time."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.reliability = reliability_of(model)
        self.probe: Any | None = None
        if self.reliability is not None:
            self.probe = feature_probe_of(model, self.reliability.feature_layer)

    def score(
        self,
        images: Iterable[np.ndarray],
        metadata: np.ndarray | None,
        batch_size: int,
        tta: bool = False,
        violations: list[list[str]] | None = None,
    ) -> Scored:
        """Probabilities and, with a reliability, the sets and referrals of ``images``
        (features read from the unflipped image); ``violations`` are the input-contract
        rules each image broke, when they were checked on its bytes."""
        model, probe, reliability = self.model, self.probe, self.reliability
        if probe is None or reliability is None:
            probs, _ = _run(
                model,
                images,
                metadata,
                batch_size,
                tta,
                lambda x: (model.predict_on_batch(x), None),
            )
            return Scored(probs, None)

        def first_view(x: Any) -> tuple[np.ndarray, np.ndarray]:
            features, probs = probe.predict_on_batch(x)
            return probs, features

        probs, features = _run(model, images, metadata, batch_size, tta, first_view)
        if features is None:
            features = np.zeros((0, reliability.distance.whitening.shape[0]))
        return Scored(probs, reliability.assess(probs, features, violations), features)
