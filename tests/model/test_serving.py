"""Serving the champion: `skinlesion serve` (MLflow's scoring server) on 127.0.0.1 against a
real `mlflow server` registry. Parity of every way to predict, bad requests, following
the alias, and models registered before they carried their preprocessing."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from PIL import Image

from skinlesion.config.files import load_params
from skinlesion.evaluation.evaluate import score_frame
from skinlesion.labels import CLASSES
from skinlesion.model.loading import load_model
from skinlesion.model.preprocessing import preprocessing_of
from skinlesion.promotion.registry import RegistryError, servable_info
from skinlesion.serving.predict import predict_images
from tests.helpers import ROOT, calibration_images, log_tiny_model, serving

pytestmark = pytest.mark.model
NAME = "serving-test"
PATIENT = {"age": 62.0, "sex": "male", "localization": "back"}


@pytest.fixture(scope="module")
def registry(mlflow_server: str, synth_dir: Path) -> Iterator[str]:
    """Two versions of NAME on the server (different weights, each with its conformal
    calibration and input contract), `champion` on version 1."""
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("serving")
    client = mlflow.MlflowClient()
    calibration = calibration_images(synth_dir)
    for seed in (1, 2):
        with mlflow.start_run():
            info = log_tiny_model(seed=seed, size=24, metadata=True, calibration=calibration)
        mlflow.register_model(info.model_uri, NAME)
    client.set_registered_model_alias(NAME, "champion", "1")
    mlflow.set_tracking_uri(None)
    yield mlflow_server


@pytest.fixture(scope="module")
def images(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Ten synthetic JPEGs (200x150) and a tall PNG of odd size, with one patient's
    metadata on every row (as `predict` gives one patient for all its images)."""
    catalog = pd.read_csv(synth_dir / "HAM10000_metadata.csv").head(10)
    folder = tmp_path_factory.mktemp("serving_images")
    rows = []
    for image_id in catalog["image_id"]:
        target = folder / f"{image_id}.jpg"
        target.write_bytes(next(synth_dir.rglob(f"{image_id}.jpg")).read_bytes())
        rows.append({"image_id": image_id, "image_path": target.name})
    pixels = np.random.default_rng(3).integers(0, 255, (131, 97, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "odd.png")
    rows.append({"image_id": "odd", "image_path": "odd.png"})
    frame = pd.DataFrame(rows).assign(**PATIENT)
    frame.attrs["folder"] = folder
    return frame


@pytest.fixture(scope="module")
def serve_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def server(registry: str, serve_dir: Path) -> Iterator[str]:
    """The server of these tests, logging every answered image to ``<serve_dir>/log``."""
    with serving(registry, serve_dir, str(serve_dir / "log"), f"models:/{NAME}@champion") as (
        url,
        _,
    ):
        yield url


def _records(frame: pd.DataFrame) -> list[dict]:
    folder = frame.attrs["folder"]
    return [
        {
            "image": base64.b64encode((folder / row.image_path).read_bytes()).decode(),
            **{key: getattr(row, key) for key in PATIENT},
        }
        for row in frame.itertuples()
    ]


def _invoke(url: str, payload: object, **kwargs) -> requests.Response:
    return requests.post(f"{url}/invocations", json=payload, timeout=60, **kwargs)


def _probabilities(answer: list[dict]) -> np.ndarray:
    return np.array([[row[c] for c in CLASSES] for row in answer])


def _sets(rows: list[dict]) -> list[tuple[list[str], bool, str]]:
    return [(r["prediction_set"], r["refer"], r["refer_reason"]) for r in rows]


def test_evaluate_predict_pyfunc_and_http_give_the_same_probabilities(registry, server, images):
    """The same probabilities, decisions, prediction sets and referrals by every path."""
    mlflow.set_tracking_uri(registry)
    uri = f"models:/{NAME}/1"
    model = load_model(uri)
    assert preprocessing_of(model) == (24, True)  # from the model, not from params.yaml
    folder = images.attrs["folder"]
    settings = load_params(ROOT / "params.yaml").evaluate.model_copy(update={"tta": False})
    scored = score_frame(model, images, folder, settings)
    evaluated = scored.probs
    assessment = scored.assessment
    assert assessment is not None
    expected_sets = [
        (assessment.prediction_set(i), bool(assessment.refer[i]), assessment.reasons[i])
        for i in range(len(images))
    ]

    paths = [folder / p for p in images["image_path"]]
    predicted = predict_images(model, paths, patient=PATIENT)
    cli = np.array([[e["probabilities"][c] for c in CLASSES] for e in predicted])

    pyfunc = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame(_records(images)))
    response = _invoke(server, {"dataframe_records": _records(images)})
    assert response.status_code == 200, response.text
    served = response.json()["predictions"]

    np.testing.assert_allclose(_probabilities(pyfunc.to_dict("records")), evaluated, atol=1e-6)
    np.testing.assert_allclose(_probabilities(served), evaluated, atol=1e-6)
    np.testing.assert_allclose(cli, evaluated, atol=1e-4)  # predict rounds to 4 places
    assert [r["prediction"] for r in served] == [CLASSES[i] for i in evaluated.argmax(1)]
    assert _sets(served) == expected_sets
    assert _sets(pyfunc.to_dict("records")) == expected_sets
    assert _sets(predicted) == expected_sets
    assert "embedding" not in served[0]  # only when asked for (the prediction log asks)
    embedded = _invoke(
        server, {"dataframe_records": _records(images)[:2], "params": {"embedding": True}}
    ).json()["predictions"]
    assert len(embedded[0]["embedding"]) == 8  # the tiny CNN's pooled features
    assert _probabilities(embedded) == pytest.approx(evaluated[:2], abs=1e-6)
    assert response.headers["x-model-version"] == "1"
    # the patient's data counts: unknown metadata gives other probabilities
    bare = [{"image": r["image"]} for r in _records(images)[:2]]
    unknown = _probabilities(_invoke(server, {"dataframe_records": bare}).json()["predictions"])
    assert not np.allclose(unknown, evaluated[:2], atol=1e-6)


def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(server, images):
    good = _records(images)[:1]
    bad = {
        "not an image": [{**good[0], "image": base64.b64encode(b"hello, not a jpeg").decode()}],
        "not base64": [{**good[0], "image": "***"}],
        "unknown sex": [{**good[0], "sex": "robot"}],
        "age out of range": [{**good[0], "age": -4}],
        "unknown site": [{**good[0], "localization": "elbow pit"}],
        "no image column": [{"age": 50}],
    }
    expected = {
        "not an image": "not a readable image",
        "not base64": "not valid base64",
        "unknown sex": "sex 'robot' is not one of",
        "age out of range": "years in 0..110, the range the model was trained on",
        "unknown site": "localization 'elbow pit' is not one of",
        "no image column": "image",
    }
    for kind, records in bad.items():
        response = _invoke(server, {"dataframe_records": records})
        assert response.status_code == 400, (kind, response.status_code, response.text)
        assert expected[kind] in response.json()["message"], (kind, response.text)

    broken = requests.post(
        f"{server}/invocations",
        data=b'{"dataframe_records": [',
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert broken.status_code == 400
    wrong_type = requests.post(
        f"{server}/invocations", data=b"x", headers={"Content-Type": "image/jpeg"}, timeout=60
    )
    assert wrong_type.status_code == 415
    huge = {"dataframe_records": [{"image": "A" * (9 << 20)}]}
    too_large = _invoke(server, huge)
    assert too_large.status_code == 413 and "bytes" in too_large.json()["message"]

    assert requests.get(f"{server}/ping", timeout=10).ok
    still = _invoke(server, {"dataframe_records": good})
    assert still.status_code == 200 and still.json()["predictions"][0]["prediction"] in CLASSES


def _encoded(image: Image.Image, fmt: str = "JPEG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def _odd_inputs(images: pd.DataFrame) -> dict[str, str]:
    """Inputs no lesion model should answer about with confidence, base64-encoded."""
    from sklearn.datasets import load_sample_image

    lesion = Image.open(images.attrs["folder"] / images["image_path"].iloc[0]).convert("RGB")
    noise = np.random.default_rng(7).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    grey16 = Image.fromarray(np.full((150, 200), 30000, dtype=np.uint16))
    return {
        "1x1": _encoded(Image.new("RGB", (1, 1), (180, 120, 100))),
        "greyscale": _encoded(lesion.convert("L")),
        "cmyk": _encoded(lesion.convert("CMYK")),
        "16-bit": _encoded(grey16, "PNG"),
        "noise": _encoded(Image.fromarray(noise)),
        "solid colour": _encoded(Image.new("RGB", (200, 150), (200, 120, 90))),
        "street photo": _encoded(Image.fromarray(load_sample_image("china.jpg"))),
    }


def test_odd_inputs_are_refused_or_referred_with_their_reason(server, images):
    """Images that break the training data's rules get a 400 naming the rule; images
    that keep them but are no lesion are answered with refer and the reason; a lesion
    gets its set. The server keeps serving."""
    odd = _odd_inputs(images)
    refused = {
        "1x1": "image is 1x1 pixels, smaller than the 64x64",
        "greyscale": "colour mode is L, the model was trained on RGB images only",
        "cmyk": "colour mode is CMYK",
        "16-bit": "colour mode is I;16",
    }
    for kind, rule in refused.items():
        response = _invoke(server, {"dataframe_records": [{"image": odd[kind]}]})
        assert response.status_code == 400, (kind, response.text)
        assert rule in response.json()["message"], (kind, response.text)
    for kind in ("noise", "solid colour", "street photo"):
        response = _invoke(server, {"dataframe_records": [{"image": odd[kind]}]})
        assert response.status_code == 200, (kind, response.text)
        answer = response.json()["predictions"][0]
        assert answer["refer"] and "out of distribution" in answer["refer_reason"], (kind, answer)
    lesion = _invoke(server, {"dataframe_records": _records(images)[:1]})
    assert lesion.status_code == 200
    assert lesion.json()["predictions"][0]["prediction_set"]


def test_a_model_trained_to_refer_answers_odd_inputs_with_the_rule(registry, images, synth_dir):
    """Under `invalid_input: refer` an image that breaks the contract is answered, with
    refer and the broken rule as its reason, beside the rows that keep it."""
    mlflow.set_tracking_uri(registry)
    with mlflow.start_run():
        info = log_tiny_model(
            seed=3, size=24, calibration=calibration_images(synth_dir), invalid_input="refer"
        )
    odd = _odd_inputs(images)
    rows = [{"image": odd["1x1"]}, {"image": odd["greyscale"]}, _records(images)[0]]
    answers = mlflow.pyfunc.load_model(info.model_uri).predict(pd.DataFrame(rows))
    assert answers["refer"].iloc[0] and "input contract: image is 1x1" in answers["refer_reason"][0]
    assert answers["refer"].iloc[1] and "colour mode is L" in answers["refer_reason"][1]
    assert "input contract" not in answers["refer_reason"][2]


def _log_stats(url: str, until: Callable[[dict], bool]) -> dict:
    deadline = time.monotonic() + 60
    while True:
        stats = requests.get(f"{url}/model", timeout=10).json()["prediction_log"]
        if until(stats) or time.monotonic() > deadline:
            return stats
        time.sleep(0.5)


def test_answered_images_are_logged_off_the_request_path(server, serve_dir, images):
    """Each image of each answered request becomes a record with its request id, image
    digest and size, the patient, the answer and an embedding; image bytes only of the
    referred answers (params.yaml's ``serve.log_images: referred``); the client's answer
    carries no embedding."""
    before = _log_stats(server, lambda s: True)["written"]
    records = _records(images)[:4]
    response = _invoke(server, {"dataframe_records": records}, headers={"X-Request-Id": "req-42"})
    assert response.status_code == 200 and response.headers["x-request-id"] == "req-42"
    assert "embedding" not in response.json()["predictions"][0]
    stats = _log_stats(server, lambda s: s["written"] >= before + 4)
    assert stats["written"] >= before + 4 and stats["dropped"] == 0
    logged = pd.concat(pd.read_parquet(f) for f in (serve_dir / "log").rglob("*.parquet"))
    mine = logged[logged["request_id"] == "req-42"].sort_values("row")
    assert len(mine) == 4 and list(mine["model_version"]) == ["1"] * 4
    raw = base64.b64decode(records[0]["image"])
    assert mine["image_sha256"].iloc[0] == hashlib.sha256(raw).hexdigest()
    assert mine["image_width"].iloc[0] == 200 and mine["age"].iloc[0] == PATIENT["age"]
    assert len(mine["embedding"].iloc[0]) == 8
    answered = response.json()["predictions"]
    kept = mine["image"].notna() if "image" in mine.columns else pd.Series([False] * 4)
    assert list(kept) == [bool(a["refer"]) for a in answered]
    for (_, record), request in zip(mine.iterrows(), records, strict=True):
        assert not record["refer"] or record["image"] == request["image"]
    assert list(mine["prediction"]) == [a["prediction"] for a in answered]


def test_a_failing_log_never_fails_a_request(registry, images, tmp_path_factory):
    """The log's sink cannot be written (its folder is under a file): requests are
    answered as ever, and the lost records are counted."""
    workdir = tmp_path_factory.mktemp("serve-broken-log")
    (workdir / "not-a-folder").write_text("")
    with serving(
        registry, workdir, str(workdir / "not-a-folder" / "log"), f"models:/{NAME}@champion"
    ) as (url, _):
        for _ in range(3):
            response = _invoke(url, {"dataframe_records": _records(images)[:2]})
            assert response.status_code == 200
        stats = _log_stats(url, lambda s: s["dropped"] >= 6)
    assert stats["dropped"] == 6 and stats["failed_writes"] >= 1 and stats["written"] == 0


def test_the_served_model_follows_the_alias(registry, server, images):
    """Promotion moves `champion`; the server swaps in the new version by itself."""
    described = requests.get(f"{server}/model", timeout=10).json()
    assert described["version"] == "1" and described["follows_alias"]
    version = mlflow.MlflowClient(registry).get_model_version(NAME, "1")
    assert described["uri"] == f"models:/{NAME}/1" and described["run_id"] == version.run_id
    assert described["load_seconds"] > 0 and described["loaded_at"].endswith("Z")
    records = _records(images)[:3]
    before = _probabilities(_invoke(server, {"dataframe_records": records}).json()["predictions"])

    client = mlflow.MlflowClient(registry)
    client.set_registered_model_alias(NAME, "champion", "2")
    try:
        deadline = time.monotonic() + 120
        while requests.get(f"{server}/model", timeout=10).json()["version"] != "2":
            assert time.monotonic() < deadline, "the server did not follow the alias"
            time.sleep(0.5)
        response = _invoke(server, {"dataframe_records": records})
        assert response.headers["x-model-version"] == "2"
        after = _probabilities(response.json()["predictions"])
        mlflow.set_tracking_uri(registry)
        expected = mlflow.pyfunc.load_model(f"models:/{NAME}/2").predict(pd.DataFrame(records))
        np.testing.assert_allclose(after, _probabilities(expected.to_dict("records")), atol=1e-6)
        assert not np.allclose(after, before, atol=1e-4)
    finally:
        client.set_registered_model_alias(NAME, "champion", "1")


@pytest.fixture(scope="module")
def legacy(registry: str) -> tuple[str, object]:
    """A model as earlier versions registered it: the bare Keras network (20x20 tensors
    in), from a run that recorded no centre crop."""
    from skinlesion.model.networks import build_cnn

    mlflow.set_tracking_uri(registry)
    cfg = load_params(ROOT / "params.yaml").train.model("cnn")
    core = build_cnn(cfg.model_copy(update={"filters": [4], "dense_units": 4}), 20)
    with mlflow.start_run():
        mlflow.log_param("input.center_crop", "False")
        info = mlflow.keras.log_model(core, name="model")
    version = mlflow.register_model(info.model_uri, "legacy-model").version
    mlflow.set_tracking_uri(None)
    return f"models:/legacy-model/{version}", core


def test_a_model_registered_before_it_carried_preprocessing(registry, legacy, tmp_path):
    """It still loads for evaluation and the gate, with the crop its training run
    recorded; a bare file of that kind is refused, saying what to do."""
    from skinlesion.model.loading import ModelFormatError
    from skinlesion.model.preprocessing import prepare_images

    uri, core = legacy
    mlflow.set_tracking_uri(registry)
    model = load_model(uri)
    assert preprocessing_of(model) == (20, False)
    raw = np.random.default_rng(0).integers(0, 255, (2, 150, 200, 3), dtype=np.uint8)
    expected = core.predict(np.asarray(prepare_images(raw, 20, False)), verbose=0)
    np.testing.assert_allclose(model.predict(raw, verbose=0), expected, atol=1e-6)

    core.save(tmp_path / "bare.keras")
    with pytest.raises(ModelFormatError, match="train it again"):
        load_model(tmp_path / "bare.keras")


def test_serving_a_legacy_model_is_refused_before_the_server_starts(registry, legacy):
    uri, _ = legacy
    mlflow.set_tracking_uri(registry)
    with pytest.raises(RegistryError, match="registered before models carried their preprocessing"):
        servable_info(uri)
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("skinlesion")),
            "serve",
            "--model",
            uri,
            "--params",
            str(ROOT / "params.yaml"),
        ],
        env={**os.environ, "MLFLOW_TRACKING_URI": registry},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1
    assert f"skinlesion upgrade-model {uri}" in result.stderr


def test_upgrade_model_registers_a_servable_copy_and_moves_the_aliases(registry, legacy):
    from skinlesion.promotion.upgrade import UpgradeError, upgrade_model

    uri, _ = legacy
    mlflow.set_tracking_uri(registry)
    client = mlflow.MlflowClient()
    old = uri.rsplit("/", 1)[-1]
    client.set_registered_model_alias("legacy-model", "champion", old)
    done = upgrade_model(client, "models:/legacy-model@champion")
    assert done.old_version == old and done.aliases == ["champion"]
    assert done.max_difference <= 1e-5
    moved = client.get_model_version_by_alias("legacy-model", "champion")
    assert moved.version == done.new_version and moved.tags["upgraded_from"] == old
    assert client.get_model_version("legacy-model", old).version == old  # nothing deleted
    servable_info(f"models:/legacy-model/{done.new_version}")
    assert preprocessing_of(load_model(f"models:/legacy-model/{done.new_version}")) == (20, False)
    with pytest.raises(UpgradeError, match="already carries its preprocessing"):
        upgrade_model(client, "models:/legacy-model@champion")
