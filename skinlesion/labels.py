"""The HAM10000 vocabulary: diagnoses and the known values of each metadata column.

Kept in one place so that validation, synthesis, splitting and reporting agree on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

CLASS_NAMES: dict[str, str] = {
    "akiec": "Actinic keratosis / intraepithelial carcinoma",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis-like lesion",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic nevus",
    "vasc": "Vascular lesion",
}

DX_TYPES: tuple[str, ...] = ("histo", "follow_up", "consensus", "confocal")

SEXES: tuple[str, ...] = ("male", "female", "unknown")

LOCALIZATIONS: tuple[str, ...] = (
    "abdomen",
    "acral",
    "back",
    "chest",
    "ear",
    "face",
    "foot",
    "genital",
    "hand",
    "lower extremity",
    "neck",
    "scalp",
    "trunk",
    "unknown",
    "upper extremity",
)

METADATA_COLUMNS: tuple[str, ...] = (
    "lesion_id",
    "image_id",
    "dx",
    "dx_type",
    "age",
    "sex",
    "localization",
)


def labels_of(frame: pd.DataFrame, classes: Sequence[str] = CLASSES) -> np.ndarray:
    """Integer class index per row of a manifest (its ``dx``), in the fixed class order:
    what training, evaluation, promotion and monitoring all score against."""
    import numpy as np

    index = {c: i for i, c in enumerate(classes)}
    return frame["dx"].map(index).to_numpy(dtype=np.int64)
