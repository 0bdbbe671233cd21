"""The hyperparameter search for real on synthetic data: trials are real trainings,
pruned per epoch, tracked as nested MLflow runs; a killed search continues its study;
the test split is never read; the tuning pipeline runs under kfp.local."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import sqlalchemy

from skinlesion.config.parse import parse_params
from tests.helpers import assert_plot, small_params, write_params

pytestmark = pytest.mark.model

SKINLESION = str(Path(sys.executable).with_name("skinlesion"))


def tune_params(params: dict, tmp_path: Path, **tune: object) -> dict:
    """Small params with a two-key space: learning rates from hopeless to good, so that
    the median pruner has trials to stop."""
    small = small_params(params, cnn={"epochs": 4})  # the pruner may stop at epochs 1-3
    small["train"]["checkpoint_dir"] = str(tmp_path / "checkpoints")
    small["tune"].update(
        {
            "trials": 4,
            "startup_trials": 2,
            "pruner": "median",
            "pruner_warmup_epochs": 1,
            "heartbeat_seconds": 1,
            "work_dir": str(tmp_path / "tune"),
            **tune,
        }
    )
    small["tune"]["cnn"] = {
        "space": {
            "train.cnn.lr": {"low": 1e-5, "high": 0.05, "log": True},
            "train.cnn.dense_units": {"choices": [8, 16]},
        }
    }
    return small


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]


def _wait_for_study(database: Path, finished: int, proc: subprocess.Popen, timeout: float):
    deadline = time.monotonic() + timeout
    # Read-only: opening a storage creates any table it lacks, and a poll that did so while
    # the search was creating its schema made the search fail (IntegrityError on
    # alembic_version, seen once). Here a poll that finds no schema yet waits and polls again.
    storage = f"sqlite:///file:{database}?mode=ro&uri=true"
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the search ended before it was killed"
        try:
            summaries = optuna.get_all_study_summaries(storage) if database.is_file() else []
        except (
            sqlalchemy.exc.OperationalError,
            sqlalchemy.exc.IntegrityError,
            optuna.exceptions.StorageInternalError,  # the schema half made: a write refused
        ):
            summaries = []  # the search holds the file's lock, or is creating its schema
        if summaries:
            study = optuna.load_study(study_name=summaries[0].study_name, storage=storage)
            if len(_finished(study)) >= finished:
                return study
        time.sleep(0.5)
    raise AssertionError(f"no {finished} finished trials within {timeout} s")


@pytest.mark.extended  # a search resumed after a kill; the search itself runs in the suite
def test_tune_cli_prunes_tracks_nested_runs_and_continues_after_a_kill(
    train_workspace, params, tmp_path
):
    settings = tune_params(params, tmp_path)
    write_params(settings, tmp_path / "params.yaml")
    out = tmp_path / "reports" / "tune"
    command = [
        SKINLESION, "tune", "--model", "cnn",
        "--manifest", str(train_workspace / "train.csv"),
        "--data-dir", str(train_workspace / "data"),
        "--params", str(tmp_path / "params.yaml"),
        "--out-dir", str(out),
    ]  # fmt: skip
    env = {**os.environ, "SKINLESION_PROGRESS": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the local sqlite store in tmp_path
    storage = f"sqlite:///{tmp_path / 'tune' / 'studies.db'}"
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=log)
        try:
            _wait_for_study(tmp_path / "tune" / "studies.db", 2, first, timeout=600)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
    [summary] = optuna.get_all_study_summaries(storage)
    killed = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert 2 <= len(_finished(killed)) < 4
    assert not (out / "best_params.yaml").exists()

    second = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"study {summary.study_name}" in second.stdout  # the same study, continued
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    finished = _finished(study)
    assert len(finished) == 4
    assert any(t.state.name == "PRUNED" for t in finished), [t.state for t in study.trials]
    assert study.trials[0].user_attrs.get("baseline") is True
    assert not [t for t in study.trials if t.state.name == "RUNNING"]  # the dead one failed

    best = (out / "best_params.yaml").read_text()
    assert "train.cnn.lr:" in best and "train.cnn.dense_units:" in best
    summary_json = json.loads((out / "summary.json").read_text())
    assert summary_json["best_value"] == pytest.approx(study.best_value)
    assert_plot(out / "history.png")

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name(settings["tracking"]["experiment"]).experiment_id]
    )
    [parent] = [r for r in runs if r.info.run_name.startswith("tune-")]
    trials = [r for r in runs if "tune.trial" in r.data.tags]
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
    states = {r.data.tags["tune.trial"]: r.data.tags.get("tune.state") for r in trials}
    for trial in finished:
        assert states[str(trial.number)] == trial.state.name.lower()
    pruned = [r for r in trials if r.data.tags.get("tune.state") == "pruned"]
    assert all(r.info.status == "KILLED" for r in pruned)
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)
    assert "val_balanced_accuracy" in trials[0].data.metrics  # per-epoch, as training logs


def test_the_search_never_reads_the_test_split(train_workspace, params, tmp_path, monkeypatch):
    """Plant a test-only signal: every test image replaced by bytes no decoder reads, and
    every test label set to melanoma. The search runs, and never asks for a test image."""
    import skinlesion.training.lifecycle
    from skinlesion.tuning.study import run_search, search_for

    data = Path(shutil.copytree(train_workspace / "data", tmp_path / "data"))
    manifest = pd.read_csv(train_workspace / "train.csv")
    test = manifest["split"] == "test"
    assert test.any()
    for path in manifest.loc[test, "image_path"].unique():
        (data / path).write_bytes(b"not an image: a search that opens it fails")
    manifest.loc[test, "dx"] = "mel"
    manifest.to_csv(tmp_path / "train.csv", index=False)

    asked: set[str] = set()
    decode = skinlesion.training.lifecycle.decode_images

    def spy(data_dir, frame, *args, **kwargs):
        asked.update(frame["image_id"])
        return decode(data_dir, frame, *args, **kwargs)

    monkeypatch.setattr(skinlesion.training.lifecycle, "decode_images", spy)
    monkeypatch.chdir(tmp_path)
    quick = tune_params(params, tmp_path, trials=2, pruner="none")
    quick["train"]["cnn"]["epochs"] = 1  # which rows a trial reads, not what it learns
    settings = parse_params(quick)
    search = search_for(settings, "cnn", tmp_path / "out")
    study = run_search(settings, search, tmp_path / "train.csv", data)
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 2
    assert asked, "the spy saw no decoding"
    assert not asked & set(manifest.loc[test, "image_id"])
    assert asked == set(manifest.loc[~test, "image_id"])  # train and val, all of them


def test_a_timeout_stops_the_search_between_trials(train_workspace, params, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from skinlesion.cli.main import command_line

    settings = tune_params(params, tmp_path, trials=10, pruner="none")
    settings["train"]["cnn"]["epochs"] = 1  # any trial outlasts a one-second timeout
    write_params(settings, tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        command_line(),
        [
            "tune", "--model", "cnn", "--timeout", "1",
            "--manifest", str(train_workspace / "train.csv"),
            "--data-dir", str(train_workspace / "data"),
            "--params", str(tmp_path / "params.yaml"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "{'complete': 1}" in result.output  # the first trial ends, no second starts
    assert (tmp_path / "reports" / "tune" / "cnn" / "best_params.yaml").is_file()
