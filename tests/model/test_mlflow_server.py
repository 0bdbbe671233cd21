"""Training against a real `mlflow server` on 127.0.0.1 records params, metrics and model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from skinlesion.labels import CLASSES
from skinlesion.model.loading import load_model
from skinlesion.model.preprocessing import preprocessing_of
from skinlesion.model.servable import encode_image
from tests.helpers import small_params, write_params

pytestmark = pytest.mark.model
PATIENTS = pd.DataFrame(
    {"age": [30, None], "sex": ["female", None], "localization": ["back", None]}
)


def test_run_is_on_the_server_with_params_metrics_and_model(
    train_workspace, params, mlflow_server, tmp_path
):
    import mlflow

    write_params(small_params(params, cnn={"epochs": 2}), tmp_path / "p.yaml")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "SKINLESION_PROGRESS": "0",
        "SKINLESION_GIT_COMMIT": "0123abcd",  # what an image built at a commit carries
    }
    root = train_workspace
    result = subprocess.run(
        [
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
            str(tmp_path / "cnn.keras"),
            "--report-dir",
            str(tmp_path / "report"),
            "--params",
            str(tmp_path / "p.yaml"),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(mlflow_server)
    runs = mlflow.search_runs(experiment_names=["skinlesion"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["train.cnn.epochs"] == "2"
    report = json.loads((tmp_path / "report/metrics.json").read_text())
    assert run.data.metrics["best_val_balanced_accuracy"] == pytest.approx(
        report["val_balanced_accuracy"]
    )
    assert report["run_id"] == run.info.run_id
    assert run.data.tags["git_commit"] == "0123abcd"
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    assert len(models) == 1
    uri = f"models:/{models[0].model_id}"
    loaded = load_model(uri)  # the Keras model, raw images in, from the server's store
    assert loaded.output_shape == (None, 7) and preprocessing_of(loaded) == (32, True)
    # The served (pyfunc) model takes images and the patient's data, as a request does.
    info = mlflow.models.get_model_info(uri)
    assert [i.name for i in info.signature.inputs.inputs] == [
        "image",
        "age",
        "sex",
        "localization",
    ]
    served = mlflow.pyfunc.load_model(uri)
    image = encode_image(np.full((90, 120, 3), 128, dtype="uint8"))
    answer = served.predict(PATIENTS.assign(image=image))
    probs = answer[list(CLASSES)].to_numpy()
    assert probs.shape == (2, 7) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert answer["refer"].dtype == bool and all(
        isinstance(s, list) for s in answer["prediction_set"]
    )
