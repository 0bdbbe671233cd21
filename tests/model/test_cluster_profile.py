"""The cluster profile, executed in miniature: `cluster.overrides` as the GPU cluster runs
it, with only sizes shrunk (image side, epochs per phase, number of images), through the
real training pipeline under kfp.local.

Two logical CPU devices stand in for a 2-GPU node (`SKINLESION_STAND_IN_GPUS`), so every
`auto` switch resolves as it does there: `MirroredStrategy` over two replicas, mixed
precision on, no feature cache (EfficientNet-Lite's three phases and ResNet's fine-tuning
train on augmented images). Data come from S3 and checkpoints go there (moto), as on the
cluster. ResNet152V2 reads a local weights file: Keras's hub is out of reach here."""

from __future__ import annotations

import json

import keras
import mlflow
import pytest

from pipelines.training_pipeline import build_pipeline
from skinlesion.config.parse import for_cluster, parse_params
from skinlesion.data.synth import make_synthetic_dataset
from skinlesion.model.loading import load_model
from tests.helpers import cluster_miniature, run_kfp_locally, small_params

pytestmark = [pytest.mark.model, pytest.mark.integration]

REPLICAS = 2
REGISTERED = "cluster-miniature"
# the phases each recipe runs, as the prefixes of its per-epoch MLflow metrics
PHASES = {
    "cnn": [""],
    "efficientnet_lite": ["head_", "top_", "full_"],
    "resnet152v2": ["head_", "fine_tune_"],
}


@pytest.fixture
def resnet_weights(tmp_path) -> str:
    """Backbone weights saved by the real architecture and read by the real loading code."""
    from skinlesion.model.networks import build_backbone

    keras.utils.set_random_seed(3)
    path = tmp_path / "resnet152v2_notop.weights.h5"
    build_backbone("none", 32).save_weights(path)
    return str(path)


def test_the_cluster_profile_runs_every_phase_on_two_replicas_in_mixed_precision(
    tmp_path, params, mlflow_server, s3_env, resnet_weights, monkeypatch, local_conditions
):
    """Every model of the cluster's `train.models` is trained through each of its phases
    on two replicas in float16 compute, then the ensemble is built, each candidate
    evaluated, compared and the winner promoted; the checkpoints went to S3 on the way."""
    from skinlesion.data.publish import publish
    from skinlesion.data.storage import bootstrap_buckets, s3_client

    local = small_params(params)
    local["tracking"]["experiment"] = "cluster-miniature"
    local["promote"]["registered_model"] = REGISTERED
    overrides = cluster_miniature(local["cluster"], str(tmp_path / "ckpt"), resnet_weights)
    local["cluster"]["overrides"] = overrides
    run = for_cluster(parse_params(local))
    cluster_models = params["cluster"]["overrides"]["train"]["models"]
    assert list(run.train.models) == cluster_models  # the cluster's models, all of them

    bucket, _ = overrides["train"]["checkpoint_uri"].removeprefix("s3://").split("/", 1)
    bootstrap_buckets([bucket])
    data = tmp_path / "ham10000"
    make_synthetic_dataset(data, n_images=100, seed=5)
    data_uri = publish(data, local["cluster"]["data_uri"], parse_params(local).validate_, 4)
    monkeypatch.setenv("SKINLESION_STAND_IN_GPUS", str(REPLICAS))
    run_kfp_locally(tmp_path, mlflow_server, monkeypatch)

    build_pipeline(parse_params(local))(data_uri=data_uri)

    client = mlflow.MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("cluster-miniature")
    runs = {
        r.data.tags["model"]: r
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("mlflow.runName", "").startswith("train-")
    }
    assert set(runs) == set(cluster_models)
    for name, train_run in runs.items():
        logged = train_run.data.params
        per_replica = run.train.model(name).batch_size
        assert train_run.data.tags["device"] == f"{REPLICAS} GPU", name
        assert logged["replicas"] == str(REPLICAS), name
        assert logged["mixed_precision"] == "True", name
        global_batch = per_replica * REPLICAS
        assert logged["global_batch_size"] == str(global_batch), name
        steps = int(logged["n_train"]) // global_batch  # whole batches for every replica
        for phase in PHASES[name]:  # every phase ran, over the images once per epoch
            history = client.get_metric_history(train_run.info.run_id, f"{phase}epoch_steps")
            assert history, f"{name}: phase {phase or 'train'} never ran"
            assert {int(m.value) for m in history} == {steps}, (name, phase)
    assert runs["cnn"].data.params["train.cnn.filters"] == str(
        params["cluster"]["overrides"]["train"]["cnn"]["filters"]
    )

    [run_dir] = (tmp_path / "pipeline_root").iterdir()
    [decision_file] = run_dir.rglob("promote/decision")
    decision = json.loads(decision_file.read_text())
    assert set(decision["candidates"]) == {*cluster_models, "ensemble"}
    assert decision["promoted"] is True
    champion = client.get_model_version_by_alias(REGISTERED, "champion")
    assert champion.version == decision["challenger_version"]

    # trained in float16 with float32 probabilities for the loss; registered in float32,
    # which is what the CPU nodes that evaluate and serve it compute in
    for name, train_run in runs.items():
        logged = train_run.data.params
        assert (logged["compute_dtype"], logged["output_dtype"]) == ("float16", "float32"), name
    for version in client.search_model_versions(f"name='{REGISTERED}'"):
        model = load_model(f"models:/{REGISTERED}/{version.version}")
        assert {layer.dtype_policy.name for layer in _leaf_layers(model)} == {"float32"}

    # a finished task leaves no checkpoints behind in S3
    listing = s3_client().list_objects_v2(Bucket=bucket, Prefix="checkpoints/")
    assert listing.get("KeyCount", 0) == 0


def _leaf_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _leaf_layers(layer)
        else:
            yield layer
