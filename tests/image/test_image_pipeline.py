"""The whole training pipeline run inside the built step image by kfp.local's
DockerRunner, on synthetic data, tracking to a real `mlflow server` on the host: what a
cluster runs, minus Kubernetes, with the cluster profile in miniature (the CNN's blocks
and Lite0's three phases on two stand-in GPUs in mixed precision, checkpoints to S3 on
a moto server; ResNet152V2 runs in the model tier only). Every output artifact is
checked, not the task status (a container that is removed before its exit code is read
is reported as a success)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pytest
from kfp import local

from pipelines.training_pipeline import build_pipeline
from skinlesion.config.parse import parse_params
from skinlesion.data.synth import make_synthetic_dataset
from tests.helpers import cluster_miniature, small_params
from tests.image.conftest import head_commit

pytestmark = pytest.mark.image
MODEL = "image-classifier"


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.stat().st_size > 0]


def _step(run_dir: Path, name: str) -> Path:
    """The folder of task ``name``, wherever the DAG nests it (the data preparation
    sub-pipeline, the condition on the change check): the shallowest of that name, since
    an artifact may hold folders named like tasks (the reports' ``train/``)."""
    return min((p for p in run_dir.rglob(name) if p.is_dir()), key=lambda p: len(p.parts))


def test_training_pipeline_runs_in_the_image(
    image, params, tmp_path, mlflow_server, s3_env, local_conditions, monkeypatch
):
    from skinlesion.data.storage import bootstrap_buckets

    root = tmp_path / "pipeline_root"
    data = root / "ham10000"
    old_umask = os.umask(0)  # the image's user (uid 10001) writes into the pipeline root
    try:
        make_synthetic_dataset(data, n_images=150, seed=2)
        small = small_params(params)
        small["train"]["ensembles"] = {}  # two models fan in to one promotion
        small["tracking"]["experiment"] = "image"
        small["promote"]["registered_model"] = MODEL
        overrides = cluster_miniature(small["cluster"], "/tmp/checkpoints")
        overrides["train"]["models"] = ["cnn", "efficientnet_lite"]
        small["cluster"].update(overrides=overrides, images={"cpu": image, "gpu": image})
        bootstrap_buckets(["skinlesion-data"])  # the cluster's checkpoint_uri bucket
        aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
        local.init(
            runner=local.DockerRunner(
                network_mode="host",  # the host's mlflow and S3 servers on 127.0.0.1
                environment={
                    "MLFLOW_TRACKING_URI": mlflow_server,
                    "SKINLESION_STAND_IN_GPUS": "2",
                    **aws,
                },
            ),
            pipeline_root=str(root),
            raise_on_error=True,
        )
        build_pipeline(parse_params(small))(data_uri=str(data))
    finally:
        os.umask(old_umask)

    [run_dir] = [d for d in root.iterdir() if d.name.startswith("skinlesion-training")]
    assert len(_files(_step(run_dir, "fetch-data") / "raw_data")) == 151  # images + metadata
    check = json.loads((_step(run_dir, "check-changes") / "check").read_text())
    assert check["changed"] is True and check["current"]["image"] == image
    expected = {
        "validate": ["report", "data_docs/data_docs/index.html"],
        "split": ["manifest"],
        "eda": ["report"],
        "oversample": ["training_manifest"],
        "train": ["model/model.keras", "report/metrics.json", "report/history.csv", "curves"],
        "evaluate": ["evaluation/metrics.json", "evaluation/roc.png", "report"],
        "promote": ["decision"],
    }
    for step, names in expected.items():
        for twin in (step, f"{step}-2") if step in ("train", "evaluate") else (step,):
            folder = _step(run_dir, twin)
            written = {p.relative_to(folder).as_posix() for p in _files(folder)}
            assert set(names) <= written, (twin, sorted(written)[:20])
    assert "data:image/png;base64," in (_step(run_dir, "eda") / "report").read_text()
    decision = json.loads((_step(run_dir, "promote") / "decision").read_text())
    assert decision["promoted"] is True and decision["registered"] == ["1", "2"]

    client = mlflow.MlflowClient(mlflow_server)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == decision["challenger_version"]
    tags = client.get_run(champion.run_id).data.tags
    assert tags["image"] == image and tags["kfp.run_id"] not in ("", "none")
    assert tags["git_commit"] == head_commit()  # the commit `make image` baked in
    for version in client.search_model_versions(f"name='{MODEL}'"):
        run = client.get_run(version.run_id)
        assert run.data.tags["device"] == "2 GPU"  # the stand-ins, inside the image
        assert run.data.params["mixed_precision"] == "True"
    lite = [v for v in client.search_model_versions(f"name='{MODEL}'")
            if client.get_run(v.run_id).data.tags["model"] == "efficientnet_lite"]  # fmt: skip
    assert client.get_metric_history(lite[0].run_id, "full_epoch_steps")  # phase 3 ran
