"""`skinlesion score`: a registered model over a folder of images into Parquet, through
the server's path, refusing odd images row by row, and resuming after a stop."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from skinlesion.cli.main import command_line
from skinlesion.labels import CLASSES
from skinlesion.model.preprocessing import read_image
from skinlesion.serving import batch
from tests.helpers import ROOT, log_tiny_model

pytestmark = pytest.mark.model
NAME = "batch-test"


@pytest.fixture
def registered(tmp_path: Path, monkeypatch, synth_dir: Path) -> str:
    """A calibrated tiny model as version 1 of NAME, `champion`, in a local store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    catalog = pd.read_csv(synth_dir / "HAM10000_metadata.csv").head(70)
    images = [read_image(next(synth_dir.rglob(f"{i}.jpg")).read_bytes()) for i in catalog.image_id]
    labels = np.array([CLASSES.index(d) for d in catalog["dx"]])
    mlflow.set_experiment("batch")
    with mlflow.start_run():
        info = log_tiny_model(seed=5, size=24, metadata=True, calibration=(images, labels))
    mlflow.register_model(info.model_uri, NAME)
    mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", "1")
    return f"models:/{NAME}@champion"


@pytest.fixture
def folder(tmp_path: Path, synth_dir: Path) -> Path:
    """22 lesion images in two sub-folders, a metadata.csv for some of them, and a 1x1
    image the model must refuse."""
    root = tmp_path / "incoming"
    catalog = pd.read_csv(synth_dir / "HAM10000_metadata.csv").iloc[80:102]
    for n, image_id in enumerate(catalog["image_id"]):
        target = root / f"clinic{n % 2}" / f"{image_id}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(next(synth_dir.rglob(f"{image_id}.jpg")), target)
    catalog.head(10)[["image_id", "age", "sex", "localization"]].to_csv(
        root / "metadata.csv", index=False
    )
    Image.new("RGB", (1, 1), (180, 120, 100)).save(root / "tiny.png")
    return root


def test_score_resumes_after_a_stop_and_equals_the_served_answers(
    registered, folder, tmp_path, monkeypatch
):
    out = tmp_path / "predictions.parquet"
    answer = batch._answer
    calls = {"n": 0}

    def stopped_after_two_chunks(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt  # as a kill between two chunks
        return answer(*args, **kwargs)

    monkeypatch.setattr(batch, "_answer", stopped_after_two_chunks)
    with pytest.raises(KeyboardInterrupt):
        batch.score(registered, str(folder), out, chunk_size=5)
    assert len(list((tmp_path / "predictions.parquet.parts").glob("part-*"))) == 2
    assert not out.exists()
    monkeypatch.setattr(batch, "_answer", answer)

    result = CliRunner().invoke(
        command_line(),
        ["score", "--input", str(folder), "--out", str(out), "--chunk", "5", "--model", registered,
         "--params", str(ROOT / "params.yaml")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "23 images" in result.output and "10 from an earlier run" in result.output
    table = pd.read_parquet(out)
    assert len(table) == 23 and table["image_id"].is_unique
    assert set(table["model_version"]) == {"1"} and table["data_version"].nunique() == 1
    assert not (tmp_path / "predictions.parquet.parts").exists()

    tiny = table.set_index("image_id").loc["tiny"]
    assert "1x1 pixels, smaller than the 64x64" in tiny["error"]
    lesions = table[table["image_id"] != "tiny"].reset_index(drop=True)
    assert (lesions["error"] == "").all() and lesions["prediction"].isin(CLASSES).all()
    assert lesions["age"].notna().sum() == 10  # patient fields where metadata.csv has them

    served = mlflow.pyfunc.load_model(f"models:/{NAME}/1").predict(batch._records(folder, lesions))
    np.testing.assert_allclose(lesions[list(CLASSES)], served[list(CLASSES)], atol=1e-6)
    assert [list(s) for s in lesions["prediction_set"]] == list(served["prediction_set"])
    assert list(lesions["refer_reason"]) == list(served["refer_reason"])


def test_parts_of_another_model_are_not_mixed_in(registered, folder, tmp_path):
    out = tmp_path / "p.parquet"
    parts = tmp_path / "p.parquet.parts"
    parts.mkdir()
    pd.DataFrame({"image_id": ["x"], "model_version": ["7"], "data_version": ["d"]}).to_parquet(
        parts / "part-00000.parquet"
    )
    with pytest.raises(batch.BatchScoringError, match="model version 7"):
        batch.score(registered, str(folder), out)


def test_score_component_writes_the_table_and_its_metrics(registered, folder, tmp_path, params):
    """The KFP component (step 16) over the same folder: the Parquet artifact with the
    versions in its metadata, and the counts in its metrics."""
    import json

    from kfp.dsl import Dataset, Metrics

    from components.score.component import score

    predictions = Dataset(uri=str(tmp_path / "predictions.parquet"))
    summary = Metrics(uri="")
    score.python_func(
        model_uri=registered,
        source=str(folder),
        chunk=8,
        tracking=json.dumps(params["tracking"]),
        predictions=predictions,
        summary=summary,
    )
    table = pd.read_parquet(predictions.path)
    assert len(table) == 23 and predictions.metadata["model_version"] == "1"
    assert summary.metadata["images"] == 23 and summary.metadata["errors"] == 1


def test_score_reads_images_under_an_s3_prefix(registered, folder, tmp_path, s3_env):
    """An s3:// source (a local S3 endpoint) is downloaded beside the output and scored."""
    from skinlesion.data.storage import mirror_to_s3, s3_client

    s3_client().create_bucket(Bucket="incoming")
    mirror_to_s3(folder, "s3://incoming/clinic-a")
    result = batch.score(registered, "s3://incoming/clinic-a", tmp_path / "s3.parquet")
    assert result.images == 23 and result.errors == 1
    local = batch.score(registered, str(folder), tmp_path / "local.parquet")
    assert result.data_version == local.data_version  # the same images, the same version
