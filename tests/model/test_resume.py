"""A training killed mid-run continues from its last checkpoint when started again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import ROOT, small_params, step_inputs, write_params

pytestmark = pytest.mark.model


def _train_cmd(root: Path, params_file: str = "resume.yaml") -> list[str]:
    return [
        sys.executable,
        "-m",
        "skinlesion",
        "train",
        "--model",
        "cnn",
        "--manifest",
        "train.csv",
        "--data-dir",
        "data",
        "--out",
        "models/resumed.keras",
        "--report-dir",
        "reports/resumed",
        "--params",
        params_file,
    ]


def _kill_after(cmd: list[str], cwd: Path, env: dict, finished_epoch: Callable[[], int]) -> None:
    """Start training and SIGKILL its process group, as an evicted pod or Ctrl-\\ would,
    once ``finished_epoch()`` reports that epoch 1 (the second) is checkpointed."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and finished_epoch() < 1:
            time.sleep(0.2)
        assert proc.poll() is None, "training ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _local_epoch(meta: Path) -> Callable[[], int]:
    return lambda: json.loads(meta.read_text()).get("epoch", -1) if meta.is_file() else -1


@pytest.mark.extended  # resuming after a kill stays in the suite: from S3, below
def test_killed_training_resumes_from_checkpoint(train_workspace, params):
    root = train_workspace
    resume_params = small_params(params, cnn={"epochs": 6, "early_stopping_patience": 50})
    resume_params["train"]["checkpoint_dir"] = "checkpoints-resume"
    write_params(resume_params, root / "resume.yaml")
    env = {**os.environ, "SKINLESION_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}
    meta = root / "checkpoints-resume/cnn/train/backup/training_metadata.json"
    _kill_after(_train_cmd(root), root, env, _local_epoch(meta))
    done_epochs = json.loads(meta.read_text())["epoch"] + 1
    run_id = (root / "checkpoints-resume/cnn/mlflow_run_id").read_text()
    assert not (root / "models/resumed.keras").exists()

    again = subprocess.run(
        _train_cmd(root), cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from checkpoint after epoch {done_epochs}" in again.stderr
    assert f"Epoch {done_epochs + 1}/6" in again.stdout
    assert "Epoch 1/6" not in again.stdout
    metrics = json.loads((root / "reports/resumed/metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == done_epochs
    assert metrics["run_id"] == run_id  # the same MLflow run goes on
    assert (root / "models/resumed.keras").is_file()


def test_retried_cluster_training_resumes_from_s3(
    train_workspace, params, s3_env, tmp_path, monkeypatch
):
    """A preempted GPU pod: training is killed after two epochs, and the retried task, on
    a new node with an empty disk, resumes from the checkpoints mirrored to S3 (moto) in
    the same MLflow run, then cleans them up."""
    from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model

    from components.train.component import train
    from skinlesion.data.storage import bootstrap_buckets, s3_client

    bootstrap_buckets(["ckpt"])
    cfg = small_params(params, cnn={"epochs": 5, "early_stopping_patience": 50})
    cfg["train"].update(
        checkpoint_dir=str(tmp_path / "pod-1"), checkpoint_uri="s3://ckpt/checkpoints"
    )
    write_params(cfg, tmp_path / "cluster.yaml")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    env = {**os.environ, "SKINLESION_PROGRESS": "0"}
    key = "checkpoints/run-42/cnn/train/backup/training_metadata.json"
    client = s3_client()

    def mirrored_epoch() -> int:
        try:
            body = client.get_object(Bucket="ckpt", Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            return -1
        return int(json.loads(body).get("epoch", -1))

    first_attempt = f"""
import yaml
from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model
from components.train.component import train
from tests.helpers import step_inputs
SECTIONS = ("data", "validate", "input", "tracking", "train", "params_hash")
train.python_func(
    model_name="cnn", raw_data=Dataset(uri={str(train_workspace / "data")!r}),
    training_manifest=Dataset(uri={str(train_workspace / "train.csv")!r}),
    **step_inputs(yaml.safe_load(open({str(tmp_path / "cluster.yaml")!r})), *SECTIONS),
    kfp_run_id="run-42",
    image="registry.example/skinlesion:abc-gpu", model=Model(uri={str(tmp_path / "m1")!r}),
    report=Artifact(uri={str(tmp_path / "r1")!r}), curves=HTML(uri={str(tmp_path / "c1")!r}),
    metrics=Metrics(uri=""),
)
"""
    env["PYTHONPATH"] = str(ROOT)  # the first attempt, a pipeline task in its own process
    _kill_after([sys.executable, "-c", first_attempt], train_workspace, env, mirrored_epoch)
    done = mirrored_epoch() + 1
    run_id = client.get_object(Bucket="ckpt", Key="checkpoints/run-42/cnn/mlflow_run_id")
    run_id = run_id["Body"].read().decode()

    cfg["train"]["checkpoint_dir"] = str(tmp_path / "pod-2")  # a new node, an empty disk
    report = Artifact(uri=str(tmp_path / "report"))
    train.python_func(
        model_name="cnn",
        raw_data=Dataset(uri=str(train_workspace / "data")),
        training_manifest=Dataset(uri=str(train_workspace / "train.csv")),
        **step_inputs(cfg, "data", "validate", "input", "tracking", "train", "params_hash"),
        kfp_run_id="run-42",
        image="registry.example/skinlesion:abc-gpu",
        model=Model(uri=str(tmp_path / "model")),
        report=report,
        curves=HTML(uri=str(tmp_path / "curves.html")),
        metrics=Metrics(uri=""),
    )
    result = json.loads((Path(report.path) / "metrics.json").read_text())
    assert result["resumed_from_epoch"] == done >= 2
    assert result["run_id"] == run_id  # the same MLflow run goes on
    assert client.list_objects_v2(Bucket="ckpt", Prefix="checkpoints/").get("KeyCount") == 0
