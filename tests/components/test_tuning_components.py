"""Unit tests of the tuning components (open_study, tune_trials, best_params), each
``python_func`` called directly on the synthetic workspace: two workers share a study."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from kfp.dsl import HTML, Artifact, Dataset, Metrics

from components.best_params.component import best_params
from components.open_study.component import open_study
from components.tune_trials.component import tune_trials
from skinlesion.config.schema import ParamsError
from tests.helpers import small_params, step_inputs

pytestmark = pytest.mark.model


def test_workers_share_one_study_and_the_best_becomes_params(
    train_workspace, params, tmp_path, monkeypatch
):
    small = small_params(params, cnn={"epochs": 2})
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    small["train"]["checkpoint_dir"] = str(tmp_path / "checkpoints")
    small["tune"].update(trials=3, pruner="none", storage=storage, work_dir=str(tmp_path))
    small["tune"]["cnn"] = {"space": {"train.cnn.dense_units": {"choices": [8, 16, 24]}}}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")

    name = open_study.python_func(
        model_name="cnn",
        study="",
        **step_inputs(small, "tune", "train", "input", "tracking"),
        kfp_run_id="r1",
    )
    assert name == "cnn-r1"  # one study per pipeline run unless named
    study = optuna.load_study(study_name=name, storage=storage)
    assert study.trials[0].user_attrs["baseline"] is True  # queued before any worker
    data = {
        "raw_data": Dataset(uri=str(train_workspace / "data")),
        "training_manifest": Dataset(uri=str(train_workspace / "train.csv")),
    }
    summaries, trials = [], []
    for worker in (0, 1):
        summary = Metrics(uri="")
        tune_trials.python_func(
            model_name="cnn", study=name, worker=worker, trials=3, kfp_run_id="r1",
            image="registry.example/skinlesion:gpu", summary=summary, **data,
            **step_inputs(
                small, "tune", "train", "input", "data", "validate", "tracking", "params_hash"
            ),
        )  # fmt: skip
        summaries.append(summary.metadata)
        trials.append(len(optuna.load_study(study_name=name, storage=storage).trials))
    assert summaries[0] == {"trials_run_here": 3, "finished_trials": 3}
    assert trials == [3, 3]  # the second worker found the study done and ran nothing

    best = Artifact(uri=str(tmp_path / "best"))
    report = HTML(uri=str(tmp_path / "report.html"))
    chosen = best_params.python_func(
        model_name="cnn", study=name, params=json.dumps(small), best=best, report=report
    )
    study = optuna.load_study(study_name=name, storage=storage)
    units = yaml.safe_load((Path(best.path) / "best_params.yaml").read_text())
    assert units == {"train.cnn.dense_units": study.best_params["train.cnn.dense_units"]}
    handed = json.loads(chosen.params)  # JSON text, what the training pipeline takes
    assert handed["train"]["cnn"]["dense_units"] == units["train.cnn.dense_units"]
    assert handed["train"]["cnn"]["epochs"] == 2  # the rest of the run's params
    assert chosen.value == pytest.approx(study.best_value)
    summary = json.loads((Path(best.path) / "summary.json").read_text())
    assert summary["trials"] == {"complete": 3}
    assert "<img" in Path(report.path).read_text()
    mlflow.set_tracking_uri(None)


def test_open_study_refuses_a_model_without_a_space(params, tmp_path):
    small = small_params(params)
    small["tune"]["storage"] = f"sqlite:///{tmp_path / 'studies.db'}"
    with pytest.raises(ParamsError, match=r"no tune\.resnet152v2\.space"):
        open_study.python_func(
            model_name="resnet152v2",
            study="",
            **step_inputs(small, "tune", "train", "input", "tracking"),
            kfp_run_id="r1",
        )
