"""Reading HAM10000 in both layouts users have, and the synthetic generator."""

from __future__ import annotations

import pandas as pd
import pytest

from skinlesion.data.catalog import DatasetLayoutError, load_catalog
from skinlesion.data.synth import make_synthetic_dataset
from skinlesion.labels import CLASSES

pytestmark = pytest.mark.code


def test_single_images_folder(synth_dir):
    catalog = load_catalog(synth_dir)
    assert len(catalog) == 120
    assert catalog["image_path"].str.startswith("images/").all()
    assert set(catalog["dx"]) == set(CLASSES)
    assert catalog.groupby("lesion_id").size().max() > 1  # several images per lesion


def test_official_two_part_layout_and_tab_metadata(tmp_path):
    frame = make_synthetic_dataset(tmp_path, n_images=20, seed=2, layout="official")
    csv = tmp_path / "HAM10000_metadata.csv"
    pd.read_csv(csv).to_csv(tmp_path / "HAM10000_metadata.tab", sep="\t", index=False)
    csv.unlink()
    catalog = load_catalog(tmp_path)
    assert len(catalog) == len(frame)
    folders = {p.split("/")[0] for p in catalog["image_path"]}
    assert folders == {"HAM10000_images_part_1", "HAM10000_images_part_2"}
    assert catalog["age"].dtype.kind == "f"


def test_missing_metadata_says_what_to_do(tmp_path):
    with pytest.raises(DatasetLayoutError, match="skinlesion data download"):
        load_catalog(tmp_path)


def test_synthetic_is_deterministic(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", n_images=15, seed=5)
    b = make_synthetic_dataset(tmp_path / "b", n_images=15, seed=5)
    pd.testing.assert_frame_equal(a, b)
    assert (tmp_path / "a/images/ISIC_0000001.jpg").read_bytes() == (
        tmp_path / "b/images/ISIC_0000001.jpg"
    ).read_bytes()
