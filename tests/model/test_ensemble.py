"""An ensemble candidate built from two trained CNNs of different input sizes: built without
retraining, loaded and answered like any model (evaluation, `predict`, the pyfunc the
server runs give the same probabilities, sets and referrals), its MLflow run carries what
promotion and monitoring read, and its probabilities are the combination it promises."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from skinlesion.config.parse import parse_params
from skinlesion.data.split import read_manifest
from skinlesion.evaluation.evaluate import score_frame
from skinlesion.evaluation.model_card import render_model_card
from skinlesion.labels import CLASSES
from skinlesion.model.ensemble import is_ensemble, members_of
from skinlesion.model.loading import load_model
from skinlesion.model.metadata import encode_metadata, model_inputs
from skinlesion.model.preprocessing import read_images
from skinlesion.model.reliability import reliability_of
from skinlesion.serving.predict import predict_images
from tests.helpers import small_params

pytestmark = pytest.mark.model
PATIENT = ("age", "sex", "localization")


@pytest.fixture(scope="module")
def built(trained_cnn, params, tmp_path_factory):
    """The session's CNN and a smaller CNN at another input size, joined as ``pair``."""
    from skinlesion.training.ensemble import build_ensemble_candidate
    from skinlesion.training.lifecycle import train_model

    workspace, cnn = trained_cnn
    small = small_params(params)
    small["train"]["cnn_small"] = {
        **small["train"]["cnn"], "recipe": "cnn", "filters": [8], "epochs": 2, "image_size": 24
    }  # fmt: skip
    small["train"]["models"] = ["cnn", "cnn_small"]
    small["train"]["ensembles"] = {
        "pair": {"members": ["cnn", "cnn_small"], "combine": "geometric"}
    }
    small["train"]["checkpoint_dir"] = str(tmp_path_factory.mktemp("ckpt"))
    small["train"]["calibration"] = "temperature"  # one member calibrated, one not
    typed = parse_params(small)
    cwd = Path.cwd()
    os.chdir(workspace)
    try:
        train_model("cnn_small", "train.csv", "data", "models/cnn_small.keras", "reports/s", typed)
        result = build_ensemble_candidate(
            "pair",
            {"cnn": cnn.model_path, "cnn_small": "models/cnn_small.keras"},
            "train.csv",
            "data",
            "ensembles/pair.keras",
            "reports/pair",
            typed,
        )
    finally:
        os.chdir(cwd)
    return workspace, result, typed


def test_the_ensemble_is_one_model_with_its_own_operating_point_and_sets(built, settings):
    workspace, _, _ = built
    report = json.loads((workspace / "reports/pair/metrics.json").read_text())
    assert report["members"] == ["cnn", "cnn_small"] and report["epochs_run"] == 0
    for key in ("val_balanced_accuracy", "val_refer_rate", "val_singleton_share"):
        assert 0.0 <= report[key] <= 1.0, key
    assert set(report["val_mel_sensitivity_at"]) >= {"0.80", "0.90"}
    small = json.loads((workspace / "reports/s/metrics.json").read_text())
    assert small["temperature"] > 0 and small["val_ece"] >= 0  # the calibrated member
    scaled = reliability_of(load_model(str(workspace / "models/cnn_small.keras")))
    assert len(scaled.calibration_scale) == len(CLASSES)
    np.testing.assert_allclose(scaled.calibration_scale, 1 / small["temperature"], rtol=1e-5)
    model = load_model(str(workspace / "ensembles/pair.keras"))
    assert is_ensemble(model) and members_of(model) == ["cnn", "cnn_small"]
    reliability = reliability_of(model)
    assert reliability is not None and len(reliability.decision_offsets) == len(CLASSES)
    for saved in (scaled, reliability):  # validation's age range travels with each model
        bounds = (saved.contract.age_min, saved.contract.age_max)
        assert bounds == (settings.validate_.age_min, settings.validate_.age_max)


def test_its_probabilities_are_the_geometric_mean_of_the_calibrated_members(built):
    workspace, _, _ = built
    ensemble = load_model(str(workspace / "ensembles/pair.keras"))
    members = [load_model(str(workspace / f"models/{m}.keras")) for m in ("cnn", "cnn_small")]
    frame = read_manifest(workspace / "split.csv").query("split == 'test'").iloc[:12]
    images = list(read_images(workspace / "data", frame))
    meta = encode_metadata(frame)
    logs = []
    for member in members:
        probs = np.concatenate(
            [member.predict_on_batch(model_inputs(member, image[None], meta[i : i + 1]))
             for i, image in enumerate(images)]
        )  # fmt: skip
        logs.append(np.log(reliability_of(member).without_offsets(probs)))
    offsets = np.asarray(reliability_of(ensemble).decision_offsets)
    z = np.mean(logs, axis=0) + offsets
    expected = np.exp(z - z.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    got = np.concatenate(
        [ensemble.predict_on_batch(model_inputs(ensemble, image[None], meta[i : i + 1]))
         for i, image in enumerate(images)]
    )  # fmt: skip
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_evaluate_predict_and_the_served_pyfunc_give_the_same_answers(built):
    """Every test image: probabilities, decisions, sets, referrals and their reasons."""
    workspace, result, params = built
    mlflow.set_tracking_uri(f"sqlite:///{workspace / 'mlflow.db'}")  # where it was logged
    frame = read_manifest(workspace / "split.csv").query("split == 'test'")
    folder = workspace / "data"
    model = load_model(result.model_uri)
    scored = score_frame(model, frame, folder, params.evaluate.model_copy(update={"tta": False}))
    assessed = scored.assessment
    assert assessed is not None
    expected = [
        (assessed.prediction_set(i), bool(assessed.refer[i]), assessed.reasons[i])
        for i in range(len(frame))
    ]
    records = [
        {
            "image": base64.b64encode((folder / row.image_path).read_bytes()).decode(),
            **{key: getattr(row, key) for key in PATIENT},
        }
        for row in frame.itertuples()
    ]
    served = mlflow.pyfunc.load_model(result.model_uri).predict(pd.DataFrame(records))
    rows = served.to_dict("records")
    probs = np.array([[r[c] for c in CLASSES] for r in rows])
    np.testing.assert_allclose(probs, scored.probs, atol=1e-6)
    assert [r["prediction"] for r in rows] == [CLASSES[i] for i in scored.probs.argmax(1)]
    assert [(r["prediction_set"], r["refer"], r["refer_reason"]) for r in rows] == expected
    first = frame.iloc[0]
    cli = predict_images(
        model, [folder / first.image_path], patient={k: first[k] for k in PATIENT}
    )[0]
    assert (cli["prediction_set"], cli["refer"]) == expected[0][:2]


def test_its_run_carries_what_promotion_monitoring_and_the_server_read(built):
    workspace, result, _ = built
    mlflow.set_tracking_uri(f"sqlite:///{workspace / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    assert run.data.tags["recipe"] == "ensemble" and run.data.tags["members"] == "cnn,cnn_small"
    listed = {f.path for f in client.list_artifacts(result.run_id)}
    assert {"lesions.json", "monitoring"} <= listed
    reference = client.list_artifacts(result.run_id, "monitoring")
    assert [f.path for f in reference] == ["monitoring/reference.parquet"]
    info = mlflow.models.get_model_info(result.model_uri)
    assert info.metadata["members"] == ["cnn", "cnn_small"]  # GET /model names them
    card = render_model_card("pair", {"n_images": 1}, {}, None, ["cnn", "cnn_small"])
    assert "An ensemble of `cnn`, `cnn_small`" in card
