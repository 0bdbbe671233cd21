"""One data version for a folder and its upload, and what changed between two versions."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from skinlesion.data.storage import bootstrap_buckets, mirror_to_s3
from skinlesion.data.synth import make_synthetic_dataset
from skinlesion.data.versions import data_version, diff_locations, list_folder, list_s3

pytestmark = pytest.mark.code


@pytest.mark.integration  # a moto S3 server
def test_a_folder_and_its_upload_have_one_version(synth_dir, s3_env):
    bootstrap_buckets(["versions"])
    mirror_to_s3(synth_dir, "s3://versions/ham10000")
    local, remote = list_folder(synth_dir, 4), list_s3("s3://versions/ham10000")
    assert remote.images == local.images and len(local.images) == 120
    assert data_version("s3://versions/ham10000") == data_version(synth_dir) == local.version


def test_the_layout_and_the_place_do_not_change_the_version(tmp_path):
    single = make_synthetic_dataset(tmp_path / "a", 40, seed=3, layout="single")
    make_synthetic_dataset(tmp_path / "b", 40, seed=3, layout="official")
    assert len(single) == 40
    assert data_version(tmp_path / "a") == data_version(tmp_path / "b")


def test_any_change_of_bytes_changes_the_version(synth_copy):
    before = data_version(synth_copy)
    image = next((synth_copy / "images").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")
    assert data_version(synth_copy) != before


def test_diff_names_images_lesions_and_class_counts(synth_dir, tmp_path):
    grown = tmp_path / "grown"
    shutil.copytree(synth_dir, grown)
    make_synthetic_dataset(grown, 20, seed=9, append=True)  # new lesions arrive
    metadata = grown / "HAM10000_metadata.csv"
    rows = pd.read_csv(metadata, dtype=str)
    removed = rows.iloc[0]
    rows.iloc[1:].to_csv(metadata, index=False)
    (grown / "images" / f"{removed['image_id']}.jpg").unlink()

    diff = diff_locations(str(synth_dir), str(grown))
    assert not diff.same and diff.metadata_changed
    assert diff.rows_removed == [removed["image_id"]]
    assert len(diff.rows_added) == 20 and diff.rows_changed == []
    assert diff.lesions_added >= 1
    old_total = sum(old for old, _ in diff.classes.values())
    new_total = sum(new for _, new in diff.classes.values())
    assert (old_total, new_total) == (120, 139)
    text = diff.describe()
    assert "20 labelled images added, 1 removed" in text and "images per class" in text
    assert diff_locations(str(synth_dir), str(synth_dir)).describe().startswith("same data")


def test_diff_counts_labelled_rows_and_unlabelled_files_apart(synth_dir, tmp_path):
    """A folder whose metadata lists fewer images than its images/ holds (7,000 rows over
    8,008 files, in small): the rows it lost are removed, the files no row names are
    unlabelled, and a relabelled row is changed although its image bytes are not."""
    part = tmp_path / "part"
    shutil.copytree(synth_dir, part)
    metadata = part / "HAM10000_metadata.csv"
    rows = pd.read_csv(metadata, dtype=str)
    kept = rows.iloc[:100].copy()
    kept.loc[kept.index[0], "dx"] = "mel" if kept.iloc[0]["dx"] != "mel" else "nv"
    kept.to_csv(metadata, index=False)

    diff = diff_locations(str(synth_dir), str(part))
    assert sorted(diff.rows_removed) == sorted(rows.iloc[100:]["image_id"])
    assert diff.rows_added == [] and diff.rows_changed == [rows.iloc[0]["image_id"]]
    assert sorted(diff.unlabelled_added) == sorted(rows.iloc[100:]["image_id"])
    assert "20 removed, 1 changed" in diff.describe()
    assert "without a metadata row: 20 added" in diff.describe()
    back = diff_locations(str(part), str(synth_dir))
    assert len(back.rows_added) == 20 and len(back.unlabelled_removed) == 20


@pytest.mark.integration  # a moto S3 server
def test_publish_validates_then_uploads_one_prefix_per_version(synth_dir, synth_copy, s3_env):
    from typer.testing import CliRunner

    from skinlesion.cli.main import command_line
    from tests.helpers import ROOT

    app = command_line()
    bootstrap_buckets(["published"])
    params = str(ROOT / "params.yaml")
    args = ["data", "publish", "--to", "s3://published/ham10000", "--params", params]
    first = CliRunner().invoke(app, [*args, "--data-dir", str(synth_dir)])
    assert first.exit_code == 0, first.output
    version = data_version(synth_dir)
    assert f"published version {version} at s3://published/ham10000/{version}" in first.output
    assert f"--param data_version={version}" in first.output
    assert data_version(f"s3://published/ham10000/{version}") == version
    again = CliRunner().invoke(app, [*args, "--data-dir", str(synth_dir)])
    assert again.exit_code == 0, again.output  # the same version: nothing uploaded again

    (synth_copy / "images" / "ISIC_0000003.jpg").unlink()  # invalid: an image is missing
    refused = CliRunner().invoke(app, [*args, "--data-dir", str(synth_copy)])
    assert refused.exit_code == 1 and "data INVALID" in refused.output
    prefixes = s3_client_prefixes("published", "ham10000/")
    assert prefixes == {version}  # the invalid folder left nothing behind


def s3_client_prefixes(bucket: str, prefix: str) -> set[str]:
    from skinlesion.data.storage import s3_client

    pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"][len(prefix) :].split("/")[0] for p in pages for o in p.get("Contents", [])}


def test_diff_command_prints_and_writes_json(synth_dir, synth_copy, tmp_path):
    import json

    from typer.testing import CliRunner

    from skinlesion.cli.main import command_line
    from tests.helpers import ROOT

    app = command_line()
    make_synthetic_dataset(synth_copy, 7, seed=11, append=True)
    out = tmp_path / "diff.json"
    params = str(ROOT / "params.yaml")
    args = ["data", "diff", str(synth_dir), str(synth_copy), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--params", params])
    assert result.exit_code == 0, result.output
    assert "7 labelled images added, 0 removed, 0 changed" in result.output
    assert len(json.loads(out.read_text())["rows_added"]) == 7
