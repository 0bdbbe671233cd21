"""Patient metadata as a model input: age, sex and body site of each image.

Dermatologists read a lesion together with who has it and where: basal cell carcinoma and
actinic keratosis sit on the sun-exposed face of older people, naevi on the backs of younger
ones, dermatofibromas on the legs. HAM10000 records these for nearly every image, and a
clinic has them when it photographs a lesion. The encoding is a fixed vector, the same in
training and in use, where anything unknown is all zeros: a prediction without metadata
gets the same input as a training image whose metadata was dropped (``input.metadata_dropout``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from skinlesion.labels import LOCALIZATIONS, SEXES

KNOWN_SEXES: tuple[str, ...] = tuple(s for s in SEXES if s != "unknown")
KNOWN_SITES: tuple[str, ...] = tuple(s for s in LOCALIZATIONS if s != "unknown")
AGE_SCALE = 100.0  # years -> about 0..1

# one-hot sex, one-hot body site, age / 100, "age is known"
METADATA_DIM = len(KNOWN_SEXES) + len(KNOWN_SITES) + 2


def metadata_width(enabled: bool) -> int:
    """Width of a model's metadata input: ``METADATA_DIM`` when ``input.metadata`` is on,
    0 for images only."""
    return METADATA_DIM if enabled else 0


def _one_hot(values: pd.Series, vocabulary: Sequence[str]) -> np.ndarray:
    position = {v: i for i, v in enumerate(vocabulary)}
    out = np.zeros((len(values), len(vocabulary)), dtype="float32")
    for row, value in enumerate(values.fillna("unknown").astype(str).str.strip().str.lower()):
        if value in position:  # unknown or unseen values stay all zeros
            out[row, position[value]] = 1.0
    return out


def encode_metadata(frame: pd.DataFrame) -> np.ndarray:
    """(len(frame), METADATA_DIM) float32 from the ``age``, ``sex`` and ``localization``
    columns; a missing column counts as unknown for every row."""
    n = len(frame)
    unknown = pd.Series([None] * n, index=frame.index, dtype=object)
    age = pd.to_numeric(frame.get("age", unknown), errors="coerce")
    known_age = age.notna().to_numpy(dtype="float32")
    return np.concatenate(
        [
            _one_hot(frame.get("sex", unknown), KNOWN_SEXES),
            _one_hot(frame.get("localization", unknown), KNOWN_SITES),
            (age.fillna(0).to_numpy(dtype="float32") / AGE_SCALE)[:, None],
            known_age[:, None],
        ],
        axis=1,
    )


def uses_metadata(model: object) -> bool:
    """Whether a (loaded) Keras model takes the ``metadata`` input."""
    return any(getattr(t, "name", "") == "metadata" for t in getattr(model, "inputs", []))


def model_inputs(model: object, images: np.ndarray, metadata: np.ndarray | None) -> object:
    """What ``model`` is called with: the images, or {image, metadata} (zeros, i.e.
    unknown, where ``metadata`` is None)."""
    if not uses_metadata(model):
        return images
    if metadata is None:
        metadata = np.zeros((len(images), METADATA_DIM), dtype="float32")
    return {"image": images, "metadata": metadata.astype("float32")}


def image_size(model: object) -> int:
    """Side of the square image input of a one- or two-input model."""
    for tensor in getattr(model, "inputs", []):
        if len(tensor.shape) == 4:
            return int(tensor.shape[1])
    raise ValueError("the model has no image input")
