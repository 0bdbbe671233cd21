"""`skinlesion monitor` end to end on a registered model: its reference logged with its run,
a prediction log written by the server's own writer from the served model's answers,
Evidently's verdict, the MLflow run, the realised accuracy, and the KFP component."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from skinlesion.cli.main import command_line
from skinlesion.labels import CLASSES
from skinlesion.model.preprocessing import read_image
from skinlesion.serving.log_records import take_records
from skinlesion.serving.prediction_log import PredictionLog, folder_sink
from tests.helpers import ROOT, log_tiny_model, run_kfp_locally

pytestmark = pytest.mark.model
NAME = "monitor-test"
PATIENT = ("age", "sex", "localization")


def _rows(synth_dir: Path, catalog: pd.DataFrame, change=None, age_shift=0.0) -> list[dict]:
    """Request rows: each image (changed, then as JPEG, when ``change`` is given) and its
    patient's fields."""
    rows = []
    for row in catalog.itertuples():
        raw = next(synth_dir.rglob(f"{row.image_id}.jpg")).read_bytes()
        if change is not None:
            data = io.BytesIO()
            change(Image.open(io.BytesIO(raw)).convert("RGB")).save(data, "JPEG", quality=95)
            raw = data.getvalue()
        age = min(row.age + age_shift, 110.0)  # shifted, within the range the model accepts
        patient = {"age": age, "sex": row.sex, "localization": row.localization}
        known = {k: v for k, v in patient.items() if not pd.isna(v)}
        rows.append({"image": base64.b64encode(raw).decode(), **known})
    return rows


def _answers(model_uri: str, rows: list[dict]) -> pd.DataFrame:
    model = mlflow.pyfunc.load_model(model_uri)
    return model.predict(pd.DataFrame(rows), params={"embedding": True})


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, synth_dir: Path) -> dict:
    """A calibrated tiny model as version 1 of NAME (`champion`) in a local store, with the
    monitoring reference that training logs: its answers on the first 60 images."""
    import os

    root = tmp_path_factory.mktemp("monitor")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        catalog = pd.read_csv(synth_dir / "HAM10000_metadata.csv")
        images = [
            read_image(next(synth_dir.rglob(f"{i}.jpg")).read_bytes())
            for i in catalog.image_id[:70]
        ]
        labels = np.array([CLASSES.index(d) for d in catalog.dx[:70]])
        mlflow.set_experiment("monitor")
        with mlflow.start_run() as run:
            info = log_tiny_model(seed=7, size=24, metadata=True, calibration=(images, labels))
        mlflow.register_model(info.model_uri, NAME)
        mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", "1")
        seen = catalog.head(60)
        answers = _answers(f"models:/{NAME}/1", _rows(synth_dir, seen))
        reference = pd.concat([seen[list(PATIENT)].reset_index(drop=True), answers], axis=1)
        reference.to_parquet(root / "reference.parquet")
        mlflow.MlflowClient().log_artifact(run.info.run_id, str(root / "reference.parquet"),
                                           "monitoring")  # fmt: skip
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        mlflow.set_tracking_uri(None)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["monitor"].update(model=f"models:/{NAME}@champion", min_images=30)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return {"uri": uri, "root": root, "catalog": catalog, "params": root / "params.yaml"}


@pytest.fixture
def tracked(store: dict, monkeypatch) -> dict:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    return store


def _write_log(folder: Path, rows: list[dict], version: str = "1") -> None:
    """The records `skinlesion serve` logs for ``rows`` as answered by ``version``
    (version 1's answers), written by its own writer."""
    answers = _answers(f"models:/{NAME}/1", rows)
    served = SimpleNamespace(uri=f"models:/{NAME}/{version}", version=version)
    body = json.dumps({"predictions": answers.to_dict(orient="records")}).encode()
    _, records = take_records(body, rows, served, "req-1", time.time(), log_images=False)
    writer = PredictionLog(folder_sink(folder), rotate_records=25)
    writer.put(records)
    writer.close()


def _monitor(store: dict, log: Path, out: Path, *extra: str):
    return CliRunner().invoke(
        command_line(),
        ["monitor", "--log", str(log), "--out-dir", str(out), "--params", str(store["params"]),
         "--fail-on-drift", *extra],
    )  # fmt: skip


def _verdicts_since(started: float) -> list[str]:
    """The verdicts of the monitor's MLflow runs started since ``started`` (the store is
    shared by this module's tests)."""
    runs = mlflow.search_runs(
        experiment_names=["skinlesion-monitoring"],
        filter_string=f"attributes.start_time >= {int(started * 1000)}",
    )
    return sorted(runs["tags.verdict"])


def _cast(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image, dtype="float32") * np.array([1.5, 1.0, 0.5], dtype="float32")
    return Image.fromarray(np.clip(pixels, 0, 255).astype("uint8"))


def test_traffic_like_the_reference_is_stable_and_shifted_traffic_drifts(
    tracked, synth_dir, tmp_path
):
    started = time.time()
    seen = tracked["catalog"].head(60)
    _write_log(tmp_path / "plain", _rows(synth_dir, seen))
    stable = _monitor(tracked, tmp_path / "plain", tmp_path / "out-plain")
    assert stable.exit_code == 0, stable.output
    assert "STABLE: 60 images answered by models:/monitor-test/1" in stable.output
    summary = json.loads((tmp_path / "out-plain" / "monitor.json").read_text())
    assert summary["verdict"] == "stable" and summary["fired"] == []
    assert (tmp_path / "out-plain" / "report.html").stat().st_size > 10_000

    _write_log(tmp_path / "shifted", _rows(synth_dir, seen, _cast, age_shift=30))
    drift = _monitor(tracked, tmp_path / "shifted", tmp_path / "out-shifted")
    assert drift.exit_code == 2, drift.output  # --fail-on-drift
    fired = json.loads((tmp_path / "out-shifted" / "monitor.json").read_text())["fired"]
    assert {"age", "embedding"} <= set(fired), drift.output
    assert _verdicts_since(started) == ["drift", "stable"]


def test_a_quiet_window_is_insufficient_and_other_versions_are_left_out(
    tracked, synth_dir, tmp_path
):
    rows = _rows(synth_dir, tracked["catalog"].head(40))
    _write_log(tmp_path / "log", rows[:20])
    _write_log(tmp_path / "log", rows[20:], version="2")  # not the champion's answers
    result = _monitor(tracked, tmp_path / "log", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "INSUFFICIENT: 20 images" in result.output, result.output
    assert "(20 by other versions left out)" in result.output
    assert not (tmp_path / "out" / "report.html").exists()
    early = _monitor(tracked, tmp_path / "log", tmp_path / "old", "--until", "2026-01-01")
    assert "INSUFFICIENT: 0 images" in early.output, early.output


def test_realised_accuracy_joins_the_log_with_the_labelled_data(tracked, synth_dir, tmp_path):
    seen = tracked["catalog"].head(40)
    _write_log(tmp_path / "log", _rows(synth_dir, seen))
    result = _monitor(tracked, tmp_path / "log", tmp_path / "out", "--labels", str(synth_dir))
    assert result.exit_code == 0, result.output
    [week] = json.loads((tmp_path / "out" / "monitor.json").read_text())["realised"]
    assert week["labelled"] == 40 and week["model_version"] == "1"
    answers = _answers(f"models:/{NAME}/1", _rows(synth_dir, seen))
    assert week["accuracy"] == pytest.approx(float((answers["prediction"] == seen.dx).mean()))


def test_the_command_line_reads_labels_from_s3_as_the_step_does(
    tracked, synth_dir, tmp_path, s3_env
):
    """Labelled data under an s3:// prefix, where the cluster keeps it: the CLI reads it as
    the KFP step does (one implementation, in the library)."""
    from skinlesion.data.storage import mirror_to_s3, s3_client

    s3_client().create_bucket(Bucket="labelled")
    mirror_to_s3(synth_dir, "s3://labelled/ham10000")
    seen = tracked["catalog"].head(40)
    _write_log(tmp_path / "log", _rows(synth_dir, seen))
    labels = "s3://labelled/ham10000"
    result = _monitor(tracked, tmp_path / "log", tmp_path / "out", "--labels", labels)
    assert result.exit_code == 0, result.output
    [week] = json.loads((tmp_path / "out" / "monitor.json").read_text())["realised"]
    assert week["labelled"] == 40 and week["model_version"] == "1"


def test_the_monitor_component_returns_the_verdict(tracked, synth_dir, tmp_path):
    """The KFP component (step 17): Evidently's HTML as its report, a metric per test."""
    from kfp.dsl import HTML, Metrics

    from components.monitor.component import monitor

    _write_log(tmp_path / "log", _rows(synth_dir, tracked["catalog"].head(60)))
    section = yaml.safe_load(tracked["params"].read_text())["monitor"]
    report, summary = HTML(uri=str(tmp_path / "report.html")), Metrics(uri="")
    verdict = monitor.python_func(
        log_uri=str(tmp_path / "log"),
        since="",
        until="",
        labels_uri="",
        monitor=json.dumps(section),
        report=report,
        summary=summary,
    )
    assert verdict == "stable" and report.metadata["model_version"] == "1"
    assert "Drift in embeddings" in Path(report.path).read_text()
    assert summary.metadata["images"] == 60 and "drift_embedding" in summary.metadata


def test_the_monitoring_pipeline_runs_locally(tracked, synth_dir, tmp_path, monkeypatch):
    """`kfp.local` runs the monitoring pipeline (report only) as the cluster would: read
    params, then step 17 in a subprocess, its HTML report an artifact of the run."""
    from pipelines.monitoring_pipeline import build_monitoring_pipeline
    from skinlesion.config.parse import parse_params

    started = time.time()
    _write_log(tmp_path / "log", _rows(synth_dir, tracked["catalog"].head(60)))
    params = yaml.safe_load(tracked["params"].read_text())
    params["cluster"]["overrides"] = {}  # the pipeline's `params` default is these
    params["monitor"]["log_uri"] = str(tmp_path / "log")
    run_kfp_locally(tmp_path, tracked["uri"], monkeypatch)
    build_monitoring_pipeline(parse_params(params))()
    [run_dir] = (tmp_path / "pipeline_root").iterdir()
    [report] = (run_dir / "monitor").rglob("report")
    assert "Value Drift for column age" in report.read_text()
    assert _verdicts_since(started) == ["stable"]
