"""Unit tests of the data-side KFP components: each component's ``python_func`` called
directly with artifacts on local paths, as KFP would call it in the container."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from kfp.dsl import HTML, Artifact, Dataset, Metrics

from components.eda.component import eda
from components.fetch_data.component import fetch_data
from components.oversample.component import oversample
from components.split.component import split
from components.validate.component import validate
from skinlesion.data.catalog import DatasetLayoutError
from skinlesion.data.publish import DataVersionError
from skinlesion.data.storage import s3_client
from skinlesion.data.validation import InvalidDataError
from skinlesion.data.versions import data_version
from tests.helpers import small_params, step_inputs

pytestmark = pytest.mark.code


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_fetch_data_copies_a_folder_and_records_its_version(synth_dir, tmp_path):
    raw = Dataset(uri=str(tmp_path / "raw"))
    fetch_data.python_func(data_uri=str(synth_dir), data_version="", raw_data=raw)
    assert _files(Path(raw.path)) == _files(synth_dir)
    assert raw.metadata["version"] == data_version(synth_dir)


def _upload(synth_dir: Path, bucket: str) -> str:
    client = s3_client()
    client.create_bucket(Bucket=bucket)
    for name in _files(synth_dir):
        client.upload_file(str(synth_dir / name), bucket, f"ham10000/{name}")
    return f"s3://{bucket}/ham10000"


def test_fetch_data_reads_a_pinned_version_of_an_s3_prefix(s3_env, synth_dir, tmp_path):
    uri = _upload(synth_dir, "raw-data")
    pinned = data_version(synth_dir)  # the folder's version is the upload's
    raw = Dataset(uri=str(tmp_path / "raw"))
    fetch_data.python_func(data_uri=uri, data_version=pinned, raw_data=raw)
    assert _files(Path(raw.path)) == _files(synth_dir)
    assert raw.metadata["version"] == pinned


def test_fetch_data_refuses_other_data_than_the_pinned_version(s3_env, synth_dir, tmp_path):
    uri = _upload(synth_dir, "other-data")
    raw = Dataset(uri=str(tmp_path / "raw"))
    with pytest.raises(DataVersionError, match=r"holds data version \w{12}, but this run pins"):
        fetch_data.python_func(data_uri=uri, data_version="0" * 64, raw_data=raw)
    assert not Path(raw.path).exists() or not _files(Path(raw.path))  # nothing copied


def test_fetch_data_names_an_empty_prefix(s3_env, tmp_path):
    s3_client().create_bucket(Bucket="empty")
    with pytest.raises(DatasetLayoutError, match="no HAM10000 metadata under s3://empty/ham10000"):
        fetch_data.python_func(
            data_uri="s3://empty/ham10000",
            data_version="",
            raw_data=Dataset(uri=str(tmp_path / "raw")),
        )


def test_validate_reports_valid_data(synth_dir, tmp_path, params):
    report, docs, summary = (
        HTML(uri=str(tmp_path / "report.html")),
        Artifact(uri=str(tmp_path / "docs")),
        Metrics(uri=str(tmp_path / "summary")),
    )
    validate.python_func(
        raw_data=Dataset(uri=str(synth_dir)),
        **step_inputs(params, "data", "validate"),
        report=report,
        data_docs=docs,
        summary=summary,
    )
    assert "data valid" in Path(report.path).read_text()
    assert summary.metadata["failed_expectations"] == 0
    assert (Path(docs.path) / "validation.json").is_file()


def test_validate_fails_the_task_on_invalid_data(synth_copy, tmp_path, params):
    first = sorted((synth_copy / "images").glob("*.jpg"))[0]
    first.unlink()  # an image the metadata names is missing
    report = HTML(uri=str(tmp_path / "report.html"))
    with pytest.raises(InvalidDataError, match="image_exists"):
        validate.python_func(
            raw_data=Dataset(uri=str(synth_copy)),
            **step_inputs(params, "data", "validate"),
            report=report,
            data_docs=Artifact(uri=str(tmp_path / "docs")),
            summary=Metrics(uri=str(tmp_path / "summary")),
        )
    assert "INVALID" in Path(report.path).read_text()  # the report is written first


def test_split_then_oversample_then_eda(synth_dir, tmp_path, params):
    small = small_params(params)
    raw = Dataset(uri=str(synth_dir))
    manifest, summary = Dataset(uri=str(tmp_path / "manifest.csv")), Metrics(uri="")
    split.python_func(
        raw_data=raw, **step_inputs(small, "data", "split"), manifest=manifest, summary=summary
    )
    frame = pd.read_csv(manifest.path)
    assert set(frame["split"]) == {"train", "val", "test"}
    assert summary.metadata["test.lesions"] == frame.query("split == 'test'")["lesion_id"].nunique()

    training, counts = Dataset(uri=str(tmp_path / "train.csv")), Metrics(uri="")
    oversample.python_func(
        manifest=manifest,
        **step_inputs(small, "oversample"),
        training_manifest=training,
        class_counts=counts,
    )
    resampled = pd.read_csv(training.path)
    assert min(counts.metadata.values()) >= min(
        small["oversample"]["min_per_class"],
        frame.query("split == 'train'")["dx"].value_counts().max(),
    )
    pd.testing.assert_frame_equal(  # val and test rows pass through untouched
        resampled.query("split != 'train'")[frame.columns].reset_index(drop=True),
        frame.query("split != 'train'").reset_index(drop=True),
    )

    page = HTML(uri=str(tmp_path / "eda.html"))
    eda.python_func(raw_data=raw, manifest=manifest, **step_inputs(small, "eda"), report=page)
    text = Path(page.path).read_text()
    assert "data:image/png;base64," in text and "class distribution" in text


def test_split_fails_on_a_folder_without_metadata(tmp_path, params, synth_dir):
    empty = tmp_path / "empty"
    shutil.copytree(synth_dir / "images", empty / "images")
    with pytest.raises(DatasetLayoutError, match=f"no HAM10000 metadata in {empty}"):
        split.python_func(
            raw_data=Dataset(uri=str(empty)),
            **step_inputs(params, "data", "split"),
            manifest=Dataset(uri=str(tmp_path / "m.csv")),
            summary=Metrics(uri=""),
        )


def test_split_component_and_split_command_write_the_same_manifest(synth_dir, tmp_path, params):
    """The KFP path and the DVC path run one implementation: the same data and params
    give byte-identical manifests."""
    from typer.testing import CliRunner

    from skinlesion.cli.main import command_line
    from tests.helpers import write_params

    app = command_line()
    small = small_params(params)
    from_component = Dataset(uri=str(tmp_path / "component.csv"))
    split.python_func(
        raw_data=Dataset(uri=str(synth_dir)),
        **step_inputs(small, "data", "split"),
        manifest=from_component,
        summary=Metrics(uri=""),
    )
    from_command = tmp_path / "command.csv"
    result = CliRunner().invoke(
        app,
        [
            "split",
            "--out",
            str(from_command),
            "--data-dir",
            str(synth_dir),
            "--params",
            str(write_params(small, tmp_path / "params.yaml")),
        ],
    )
    assert result.exit_code == 0, result.output
    assert Path(from_component.path).read_bytes() == from_command.read_bytes()
