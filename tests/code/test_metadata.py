"""Patient metadata encoding: fixed width, unknown is all zeros, the same in use as in training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skinlesion.model.metadata import KNOWN_SEXES, KNOWN_SITES, METADATA_DIM, encode_metadata

pytestmark = pytest.mark.code


def test_known_values_are_one_hot_and_age_is_scaled_with_a_known_flag():
    frame = pd.DataFrame(
        {"age": [45.0, np.nan], "sex": ["female", "male"], "localization": ["back", "Face "]}
    )
    meta = encode_metadata(frame)
    assert meta.shape == (2, METADATA_DIM) and meta.dtype == np.float32
    sexes, sites = meta[:, : len(KNOWN_SEXES)], meta[:, len(KNOWN_SEXES) : -2]
    assert sexes[0, KNOWN_SEXES.index("female")] == 1 and sexes[0].sum() == 1
    assert sites[1, KNOWN_SITES.index("face")] == 1 and sites[1].sum() == 1  # case, spaces
    np.testing.assert_allclose(meta[:, -2:], [[0.45, 1.0], [0.0, 0.0]])


def test_unknown_unseen_and_missing_metadata_encode_as_zeros():
    frame = pd.DataFrame(
        {"age": [None, None], "sex": ["unknown", None], "localization": ["unknown", "elbow"]}
    )
    assert not encode_metadata(frame).any()
    assert not encode_metadata(pd.DataFrame({"image_id": ["a", "b"]})).any()
