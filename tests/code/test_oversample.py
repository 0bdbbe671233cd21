"""Oversampling touches the training part only and keeps the split leak-free."""

from __future__ import annotations

import pandas as pd
import pytest

from skinlesion.data.leakage import LeakageError
from skinlesion.data.oversample import oversample_manifest, target_counts
from skinlesion.data.split import split_dataset

pytestmark = pytest.mark.code


@pytest.fixture(scope="module")
def manifest(synth_dir, settings):
    return split_dataset(synth_dir, settings.split.model_copy(update={"seed": 3}), 4)


def test_targets_raise_minorities_but_never_the_majority():
    counts = pd.Series({"nv": 100, "mel": 10, "df": 60})
    assert target_counts(counts, 50) == {"nv": 100, "mel": 50, "df": 60}
    assert target_counts(counts, 500) == {"nv": 100, "mel": 100, "df": 100}


def test_only_training_rows_are_resampled(manifest, settings):
    result = oversample_manifest(
        manifest, settings.oversample.model_copy(update={"min_per_class": 40, "seed": 1})
    )
    for part in ("val", "test"):
        before = manifest[manifest["split"] == part].reset_index(drop=True)
        after = result[result["split"] == part].drop(columns="oversampled")
        pd.testing.assert_frame_equal(before, after.reset_index(drop=True))
    train = result[result["split"] == "train"]
    original = manifest[manifest["split"] == "train"]
    assert set(train["image_id"]) == set(original["image_id"])
    assert int(train["oversampled"].sum()) == len(train) - len(original)
    assert train["dx"].value_counts().min() >= min(40, original["dx"].value_counts().max())


def test_oversampling_a_leaking_manifest_fails(manifest, settings):
    leaky = manifest.copy()
    first_test = leaky.index[leaky["split"] == "test"][0]
    leaky.loc[first_test, "lesion_id"] = leaky.loc[leaky["split"] == "train", "lesion_id"].iloc[0]
    with pytest.raises(LeakageError):
        oversample_manifest(leaky, settings.oversample)
