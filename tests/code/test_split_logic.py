"""Splitting and the leakage check, on small frames and the synthetic set."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from skinlesion.cli.main import command_line
from skinlesion.config.schema import SplitSettings
from skinlesion.data.leakage import LeakageError, assert_no_leakage
from skinlesion.data.split import (
    assign_split,
    lesion_groups,
    split_dataset,
    split_position,
)
from skinlesion.data.synth import make_synthetic_dataset
from tests.helpers import ROOT

pytestmark = pytest.mark.code
app = command_line()
SPLIT = SplitSettings(seed=42, val_fraction=0.15, test_fraction=0.15)
PARAMS = str(ROOT / "params.yaml")


def test_groups_join_lesions_sharing_identical_images():
    frame = pd.DataFrame(
        {
            "lesion_id": ["A", "A", "B", "C"],
            "sha256": ["h1", "h2", "h2", "h3"],
        }
    )
    groups = lesion_groups(frame)
    assert groups[0] == groups[1] == groups[2] == "A"  # named by the smallest lesion id
    assert groups[3] == "C"
    assert lesion_groups(frame.iloc[::-1]).tolist() == groups.iloc[::-1].tolist()


def test_split_is_grouped_by_lesion_in_the_fractions_and_deterministic(synth_dir):
    settings = SplitSettings(seed=7, val_fraction=0.2, test_fraction=0.2)
    first = split_dataset(synth_dir, settings, 4)
    again = split_dataset(synth_dir, settings, 4)
    pd.testing.assert_frame_equal(first, again)
    assert first.groupby("lesion_id")["split"].nunique().max() == 1
    lesions = first.drop_duplicates("lesion_id")
    shares = lesions["split"].value_counts(normalize=True)
    assert abs(shares["test"] - 0.2) < 0.1 and abs(shares["val"] - 0.2) < 0.1


def test_positions_are_uniform_and_per_class_fractions_hold():
    """The hash spreads ids evenly, so every diagnosis gets the fractions in expectation."""
    settings = SplitSettings(seed=42, val_fraction=0.15, test_fraction=0.15)
    ids = [f"HAM_{i:07d}" for i in range(6000)]
    sides = pd.Series([assign_split(i, settings) for i in ids]).value_counts(normalize=True)
    assert abs(sides["test"] - 0.15) < 0.015 and abs(sides["val"] - 0.15) < 0.015
    assert 0 <= split_position("HAM_0000001", 1) < 1
    assert split_position("HAM_0000001", 1) != split_position("HAM_0000001", 2)


def test_new_lesions_never_move_old_ones(synth_copy):
    """The stable split: data grows by ~20% and every old lesion keeps its side."""
    before = split_dataset(synth_copy, SPLIT, 4)
    make_synthetic_dataset(synth_copy, n_images=25, seed=9, append=True)
    after = split_dataset(synth_copy, SPLIT, 4)
    assert len(after) == len(before) + 25
    old = after.set_index("image_id").loc[before["image_id"], "split"]
    assert (old.to_numpy() == before["split"].to_numpy()).all()
    assert set(after["lesion_id"]) > set(before["lesion_id"])


def test_identical_image_in_another_lesion_stays_on_the_same_side(synth_copy):
    meta = pd.read_csv(synth_copy / "HAM10000_metadata.csv")
    source = meta.iloc[0]
    shutil.copy(
        synth_copy / f"images/{source.image_id}.jpg", synth_copy / "images/ISIC_9999999.jpg"
    )
    copy = source.copy()
    copy["image_id"], copy["lesion_id"] = "ISIC_9999999", "HAM_9999999"
    pd.concat([meta, copy.to_frame().T]).to_csv(synth_copy / "HAM10000_metadata.csv", index=False)
    manifest = split_dataset(synth_copy, SPLIT, 4)
    sides = manifest.set_index("image_id")["split"]
    assert sides["ISIC_9999999"] == sides[source.image_id]


def test_planted_leak_fails_the_stage(synth_dir, tmp_path, monkeypatch):
    """Plant the original study's bug, splitting by image instead of by lesion: images of
    one lesion land on both sides, and the split stage must exit non-zero."""
    import skinlesion.data.split as split_module

    monkeypatch.setattr(split_module, "lesion_groups", lambda frame: frame["image_id"])
    out = tmp_path / "manifest.csv"
    result = CliRunner().invoke(
        app, ["split", "--data-dir", str(synth_dir), "--out", str(out), "--params", PARAMS]
    )
    assert result.exit_code == 1
    assert "LEAKAGE" in result.output and "lesion_id=HAM_" in result.output
    assert not out.exists()


def test_leakage_check_names_duplicated_content():
    manifest = pd.DataFrame(
        {
            "lesion_id": ["A", "B"],
            "sha256": ["same", "same"],
            "split": ["train", "test"],
        }
    )
    with pytest.raises(LeakageError, match="sha256=same in test, train"):
        assert_no_leakage(manifest)


def test_leakage_check_rejects_unknown_split():
    with pytest.raises(LeakageError, match="unknown split"):
        assert_no_leakage(pd.DataFrame({"lesion_id": ["A"], "split": ["holdout"]}))
