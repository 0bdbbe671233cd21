"""Model behaviour: training on synthetic data learns, tracks to MLflow, saves .keras."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from skinlesion.config.parse import parse_params
from skinlesion.data.split import read_manifest
from skinlesion.evaluation.evaluate import evaluate_frame
from skinlesion.model.loading import load_model
from tests.helpers import small_params

pytestmark = pytest.mark.model


def test_cnn_learns_the_synthetic_classes(trained_cnn):
    root, result = trained_cnn
    assert (root / "models/cnn.keras").is_file()
    assert result.val_balanced_accuracy > 0.5  # chance is 1/7
    metrics = json.loads((root / "reports/cnn/metrics.json").read_text())
    history = pd.read_csv(root / "reports/cnn/history.csv")
    assert metrics["epochs_run"] == len(history) == 6  # early stopping's patience is 6
    # the kept epoch is the best on validation, never the last by default
    assert metrics["best_epoch"] == int(history["val_balanced_accuracy"].idxmax())
    assert (root / "reports/cnn/curves.png").is_file()
    assert not (root / "checkpoints/cnn").exists()  # finished runs leave no checkpoint


def test_training_is_tracked_in_local_sqlite_store(trained_cnn):
    root, result = trained_cnn
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    run = mlflow.get_run(result.run_id)
    assert run.data.params["train.cnn.epochs"] == "6"
    assert "best_val_balanced_accuracy" in run.data.metrics
    assert run.data.tags["model"] == "cnn" and run.data.tags["data.manifest_md5"]
    history = mlflow.tracking.MlflowClient().get_metric_history(
        result.run_id, "val_balanced_accuracy"
    )
    assert len(history) == result.epochs_run
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    assert any(m.source_run_id == result.run_id for m in models)
    # what drift monitoring compares served traffic with: the validation images
    reference = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="monitoring")
        + "/reference.parquet"
    )
    split = read_manifest(root / "split.csv")
    assert len(reference) == (split["split"] == "val").sum()
    assert {"dx", "age", "sex", "localization", "prediction", "confidence"} <= set(reference)
    assert len(reference["embedding"].iloc[0]) == 32  # the small CNN's last filters: [16, 32]
    assert "val_set_size_mean" in run.data.metrics and "ood_threshold" in run.data.metrics


def test_model_evaluates_above_chance_on_test_and_probabilities_sum_to_one(trained_cnn, params):
    root, _ = trained_cnn
    model = load_model(root / "models/cnn.keras")
    test = read_manifest(root / "split.csv").query("split == 'test'")
    small = small_params(params)
    metrics, scored = evaluate_frame(model, test, root / "data", parse_params(small).evaluate)
    np.testing.assert_allclose(scored.probs.sum(axis=1), 1.0, atol=1e-4)
    conformal = metrics["conformal"]  # the trained model carries its calibration
    assert conformal["alpha"] == params["train"]["reliability"]["alpha"]
    assert set(conformal["coverage_by_class"]) == set(metrics["recall"])
    assert scored.assessment is not None and scored.assessment.sets.shape == (len(test), 7)
    sizes = scored.assessment.sets.sum(axis=1)  # the figures are those of the sets answered
    assert conformal["set_size_mean"] == pytest.approx(sizes.mean())
    assert conformal["refer_rate"] == pytest.approx(scored.assessment.refer.mean())
    assert metrics["balanced_accuracy"] > 0.4
    assert set(metrics["recall"]) == {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
