"""A training killed mid-run continues from its last checkpoint when started again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import small_params, write_params

pytestmark = pytest.mark.model


def _train_cmd(root: Path) -> list[str]:
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
        "resume.yaml",
    ]


def test_killed_training_resumes_from_checkpoint(train_workspace, params):
    root = train_workspace
    resume_params = small_params(params, cnn={"epochs": 12, "early_stopping_patience": 50})
    resume_params["train"]["checkpoint_dir"] = "checkpoints-resume"
    write_params(resume_params, root / "resume.yaml")
    env = {**os.environ, "SKINLESION_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}
    meta = root / "checkpoints-resume/cnn/train/backup/training_metadata.json"
    proc = subprocess.Popen(
        _train_cmd(root),
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if meta.is_file() and json.loads(meta.read_text()).get("epoch", -1) >= 1:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "training ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # as an evicted pod or Ctrl-\ would
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done_epochs = json.loads(meta.read_text())["epoch"] + 1
    run_id = (root / "checkpoints-resume/cnn/mlflow_run_id").read_text()
    assert not (root / "models/resumed.keras").exists()

    again = subprocess.run(
        _train_cmd(root), cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from checkpoint after epoch {done_epochs}" in again.stderr
    assert f"Epoch {done_epochs + 1}/12" in again.stdout
    assert "Epoch 1/12" not in again.stdout
    metrics = json.loads((root / "reports/resumed/metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == done_epochs
    assert metrics["run_id"] == run_id  # the same MLflow run goes on
    assert (root / "models/resumed.keras").is_file()
