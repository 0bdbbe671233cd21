"""The Kubeflow pipelines, run for real by `kfp.local` (each step a subprocess, as each step
is a container on the cluster) on synthetic data, ending with models in the registry of a
real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import json

import mlflow
import pytest

from pipelines.training_pipeline import build_pipeline
from skinlesion.config.parse import parse_params
from skinlesion.data.synth import make_synthetic_dataset
from tests.helpers import run_kfp_locally, small_params

pytestmark = pytest.mark.model


@pytest.mark.extended  # the training pipeline runs in the suite: test_cluster_profile.py
def test_tuning_then_training_pipelines_run_locally(
    tmp_path, params, mlflow_server, monkeypatch, local_conditions
):
    """The tuning pipeline: its data preparation, two workers sharing one study of three
    tiny trials, the pick on validation, and with `train_best` the training pipeline,
    nested, on the picked params: the two default models (the tuned CNN and the transfer
    network from the packaged ImageNet weights), each trained, evaluated and registered,
    compared on the same test lesions, the one best on validation promoted. A week later
    the training pipeline on the same params and data stops after the change check:
    nothing is trained or registered."""
    import optuna

    from pipelines.tuning_pipeline import build_tuning_pipeline
    from skinlesion.config.files import to_pipeline
    from skinlesion.tuning.space import with_values

    data = tmp_path / "ham10000"
    make_synthetic_dataset(data, n_images=150, seed=2)
    small = small_params(params, cnn={"epochs": 2})
    small["train"].update(
        models=["cnn", "efficientnet_lite"], checkpoint_dir=str(tmp_path / "ckpt")
    )
    small["tracking"]["experiment"] = "kfp"
    small["promote"]["registered_model"] = "kfp-classifier"
    small["cluster"]["overrides"] = {}  # the pipelines' `params` default is `small` itself
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    small["tune"].update(
        trials=3, parallel=2, startup_trials=3, pruner="none", storage=storage,
        work_dir=str(tmp_path / "tune"),
    )  # fmt: skip
    small["tune"]["cnn"] = {"space": {"train.cnn.dense_units": {"choices": [8, 16, 24]}}}
    run_kfp_locally(tmp_path, mlflow_server, monkeypatch)

    build_tuning_pipeline(parse_params(small))(
        data_uri=str(data), study="kfp-local", train_best=True
    )

    study = optuna.load_study(study_name="kfp-local", storage=storage)
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 3
    [run_dir] = (tmp_path / "pipeline_root").iterdir()
    summary = json.loads((run_dir / "best-params" / "best" / "summary.json").read_text())
    assert summary["best_trial"] == study.best_trial.number
    assert summary["best_value"] == pytest.approx(study.best_value)  # validation only
    steps = {p.name for p in run_dir.rglob("*") if p.is_dir()}
    for step in ("read-params", "validate", "split", "oversample", "check-changes", "eda"):
        assert step in steps, step
    assert {"train", "train-2", "evaluate", "evaluate-2"} <= steps
    [decision_file] = run_dir.rglob("promote/decision")
    decision = json.loads(decision_file.read_text())
    # gathered by the chain: both models, then the ensemble built from them (step 8)
    assert set(decision["candidates"]) == {"cnn", "efficientnet_lite", "ensemble"}
    [compared] = run_dir.rglob("compare/comparison/comparison.json")
    pairs = json.loads(compared.read_text())["pairs"]
    assert len(pairs) == 3
    assert decision["promoted"] is True  # first promotion: no champion to beat
    client = mlflow.MlflowClient(mlflow_server)
    champion = client.get_model_version_by_alias("kfp-classifier", "champion")
    assert champion.version == decision["challenger_version"]
    registered = client.search_model_versions("name='kfp-classifier'")
    assert len(registered) == 3  # both models and their ensemble
    units = summary["best_params"]["train.cnn.dense_units"]
    [tuned] = [v for v in registered if client.get_run(v.run_id).data.tags["model"] == "cnn"]
    tuned_run = client.get_run(tuned.run_id)
    assert tuned_run.data.params["train.cnn.dense_units"] == str(units)  # the best, trained
    assert tuned_run.data.tags["kfp.run_id"] not in ("", "none")  # the run's placeholder

    # A week later, nothing changed: the run stops after the check, trains nothing.
    best = with_values(parse_params(small), summary["best_params"])
    build_pipeline(parse_params(small))(params=to_pipeline(best), data_uri=str(data))
    [second] = [d for d in (tmp_path / "pipeline_root").iterdir() if d != run_dir]
    check = json.loads((second / "check-changes" / "check").read_text())
    assert check["changed"] is False
    assert check["reason"].startswith(f"nothing changed since version {champion.version}")
    assert not list(second.glob("condition-*"))  # nothing after the check ran
    assert len(client.search_model_versions("name='kfp-classifier'")) == 3
