"""The whole Kubeflow pipeline, run for real by `kfp.local` (each step a subprocess, as
each step is a container on the cluster) on synthetic data, ending with a model in the
registry of a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from kfp import local

from pipelines.training_pipeline import build_pipeline
from skinlesion.config.parse import parse_params
from skinlesion.data.synth import make_synthetic_dataset
from tests.conftest import small_params

pytestmark = pytest.mark.model


def _run_locally(tmp_path: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """kfp.local with each step a subprocess in ``tmp_path``, MLflow at the test server."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # what the Secret sets
    monkeypatch.setenv("SKINLESION_PROGRESS", "0")
    monkeypatch.chdir(tmp_path)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "pipeline_root"),
        raise_on_error=True,
    )


def test_pipeline_runs_locally_end_to_end(
    tmp_path, params, mlflow_server, monkeypatch, local_conditions
):
    data = tmp_path / "ham10000"
    make_synthetic_dataset(data, n_images=150, seed=2)
    small = small_params(params, cnn={"epochs": 2})
    # two models, so that the branches fan in to one promotion; a second CNN is as good a
    # second model for that as the ResNet (whose training tests/model/test_resnet.py shows)
    small["train"]["cnn_tiny"] = {**small["train"]["cnn"], "recipe": "cnn", "filters": [8]}
    small["train"].update(models=["cnn", "cnn_tiny"], checkpoint_dir=str(tmp_path / "ckpt"))
    small["tracking"]["experiment"] = "kfp"
    small["promote"]["registered_model"] = "kfp-local-classifier"
    small["cluster"]["overrides"] = {}  # the pipeline's `params` default is `small` itself
    _run_locally(tmp_path, mlflow_server, monkeypatch)

    pipeline = build_pipeline(parse_params(small))
    pipeline(data_uri=str(data))

    [run_dir] = (tmp_path / "pipeline_root").iterdir()
    trained = run_dir / "condition-1"  # the steps that run only when something changed
    decision = json.loads((trained / "promote" / "decision").read_text())
    client = mlflow.MlflowClient(mlflow_server)
    challenger = client.get_model_version_by_alias("kfp-local-classifier", "challenger")
    assert decision["challenger_version"] == challenger.version
    assert decision["promoted"] is True  # first promotion: no champion to beat
    champion = client.get_model_version_by_alias("kfp-local-classifier", "champion")
    assert champion.version == challenger.version
    versions = client.search_model_versions("name='kfp-local-classifier'")
    assert len(versions) == 2  # both models registered
    for step in ("validate", "split", "eda", "oversample", "train", "train-2", "evaluate"):
        assert (trained / step).is_dir(), step
    assert set(decision["candidates"]) == {"cnn", "cnn_tiny"}  # gathered by the chain
    assert Path(trained / "evaluate" / "evaluation" / "metrics.json").is_file()
    train_run = mlflow.get_run(champion.run_id)
    assert train_run.data.tags["kfp.run_id"] not in ("", "none")  # the run's placeholder

    # A week later, nothing changed: the run stops after the check, trains nothing.
    pipeline(data_uri=str(data))
    [second] = [d for d in (tmp_path / "pipeline_root").iterdir() if d != run_dir]
    check = json.loads((second / "check-changes" / "check").read_text())
    assert check["changed"] is False
    assert check["reason"].startswith(f"nothing changed since version {champion.version}")
    assert not (second / "condition-1").exists()
    assert len(client.search_model_versions("name='kfp-local-classifier'")) == 2


def test_tuning_pipeline_runs_locally_and_trains_with_the_best(
    tmp_path, params, mlflow_server, monkeypatch, local_conditions
):
    """Two workers share one study of three tiny trials; the pick step chooses on
    validation and hands its params to the training pipeline, which trains with them."""
    import optuna

    from pipelines.tuning_pipeline import build_tuning_pipeline

    data = tmp_path / "ham10000"
    make_synthetic_dataset(data, n_images=150, seed=2)
    small = small_params(params, cnn={"epochs": 2})
    small["train"].update(models=["cnn"], checkpoint_dir=str(tmp_path / "checkpoints"))
    small["tracking"]["experiment"] = "kfp"
    small["promote"]["registered_model"] = "kfp-tuned-classifier"
    small["cluster"]["overrides"] = {}
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    small["tune"].update(
        trials=3, parallel=2, startup_trials=3, pruner="none", storage=storage,
        work_dir=str(tmp_path / "tune"),
    )  # fmt: skip
    small["tune"]["cnn"] = {"space": {"train.cnn.dense_units": {"choices": [8, 16, 24]}}}
    _run_locally(tmp_path, mlflow_server, monkeypatch)

    pipeline = build_tuning_pipeline(parse_params(small))
    pipeline(data_uri=str(data), study="kfp-local", train_best=True)

    study = optuna.load_study(study_name="kfp-local", storage=storage)
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 3
    [run_dir] = (tmp_path / "pipeline_root").iterdir()
    summary = json.loads((run_dir / "best-params" / "best" / "summary.json").read_text())
    assert summary["best_trial"] == study.best_trial.number
    assert summary["best_value"] == pytest.approx(study.best_value)  # validation only
    units = summary["best_params"]["train.cnn.dense_units"]
    client = mlflow.MlflowClient(mlflow_server)
    challenger = client.get_model_version_by_alias("kfp-tuned-classifier", "challenger")
    trained = client.get_run(challenger.run_id)
    assert trained.data.params["train.cnn.dense_units"] == str(units)  # the best, trained
