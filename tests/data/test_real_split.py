"""The split of the real HAM10000 data (../shared/data/ham10000) is lesion-disjoint."""

from __future__ import annotations

import pytest

from skinlesion.config.parse import parse_params
from skinlesion.data.leakage import assert_no_leakage
from skinlesion.data.split import split_dataset

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def real_manifest(real_data_dir, params):
    return split_dataset(real_data_dir, parse_params(params).split, 8)


def test_no_lesion_and_no_identical_image_in_two_splits(real_manifest):
    assert_no_leakage(real_manifest)
    assert real_manifest.groupby("lesion_id")["split"].nunique().max() == 1
    assert real_manifest.groupby("sha256")["split"].nunique().max() == 1


def test_known_identical_pairs_stay_together(real_manifest):
    dup = real_manifest[real_manifest.duplicated("sha256", keep=False)]
    assert len(dup) >= 2  # the README's byte-identical pairs (one is in this portion)
    assert dup.groupby("sha256")["split"].nunique().max() == 1


def test_every_class_in_every_split_near_the_fractions(real_manifest, params):
    n = len(real_manifest)
    shares = real_manifest["split"].value_counts() / n
    assert abs(shares["test"] - params["split"]["test_fraction"]) < 0.03
    assert abs(shares["val"] - params["split"]["val_fraction"]) < 0.03
    per_split = real_manifest.groupby("split")["dx"].nunique()
    assert (per_split == 7).all()
