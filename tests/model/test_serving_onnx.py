"""`skinlesion serve --runtime onnx`: the registered versions' exports served without
TensorFlow, beside the Keras server on the same registry. The same API, the same answers,
the same 400s and referrals for odd inputs, its prediction log, following the alias; a
version without an export is refused before the server starts."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from PIL import Image

from skinlesion.model.portable import TOLERANCE
from tests.helpers import ROOT, calibration_images, log_tiny_model, serving

pytestmark = [pytest.mark.model, pytest.mark.integration]

NAME = "onnx-serving-test"
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


@pytest.fixture(scope="module")
def registry(mlflow_server: str, synth_dir: Path) -> Iterator[str]:
    """Two versions of NAME, each with its export logged by `skinlesion export --log`, and
    a third without one; `champion` on version 1."""
    from skinlesion.serving.exports import export_reference

    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("onnx-serving")
    client = mlflow.MlflowClient()
    calibration = calibration_images(synth_dir)
    for seed in (1, 2, 3):
        with mlflow.start_run():
            info = log_tiny_model(seed=seed, size=24, metadata=True, calibration=calibration)
        version = mlflow.register_model(info.model_uri, NAME).version
        if seed < 3:
            export_reference(f"models:/{NAME}/{version}", None, log=True)
    client.set_registered_model_alias(NAME, "champion", "1")
    mlflow.set_tracking_uri(None)
    yield mlflow_server


@pytest.fixture(scope="module")
def servers(registry: str, tmp_path_factory) -> Iterator[dict[str, tuple[str, int, Path]]]:
    """The Keras server and the TensorFlow-free one, both on `champion`, each logging."""
    found = {}
    keras_dir, onnx_dir = tmp_path_factory.mktemp("keras"), tmp_path_factory.mktemp("onnx")
    champion = f"models:/{NAME}@champion"
    with (
        serving(registry, keras_dir, str(keras_dir / "log"), champion) as (keras_url, keras_proc),
        serving(registry, onnx_dir, str(onnx_dir / "log"), champion, "onnx") as (url, proc),
    ):
        found["keras"] = (keras_url, keras_proc.pid, keras_dir)
        found["onnx"] = (url, proc.pid, onnx_dir)
        yield found


def _encoded(image: Image.Image, fmt: str = "JPEG") -> str:
    data = io.BytesIO()
    image.save(data, fmt)
    return base64.b64encode(data.getvalue()).decode()


def _rows(synth_dir: Path, n: int = 12) -> list[dict]:
    catalog = pd.read_csv(synth_dir / "HAM10000_metadata.csv").tail(n)
    files = {p.stem: p for p in synth_dir.rglob("*.jpg")}
    return [
        {
            "image": base64.b64encode(files[r.image_id].read_bytes()).decode(),
            "age": r.age, "sex": r.sex, "localization": r.localization,
        }
        for r in catalog.itertuples()
    ]  # fmt: skip


def _invoke(url: str, rows: list[dict]) -> requests.Response:
    return requests.post(f"{url}/invocations", json={"dataframe_records": rows}, timeout=120)


def test_the_tensorflow_free_server_answers_as_the_keras_one(servers, synth_dir):
    rows = _rows(synth_dir)
    answers = {}
    for runtime, (url, _, _) in servers.items():
        response = _invoke(url, rows)
        assert response.status_code == 200, response.text
        assert response.headers["X-Model-Version"] == "1"
        answers[runtime] = pd.DataFrame(response.json()["predictions"])
    want, got = answers["keras"], answers["onnx"]
    for column in ("prediction", "prediction_set", "refer", "refer_reason"):
        assert want[column].tolist() == got[column].tolist(), column
    assert (want[CLASSES] - got[CLASSES]).abs().to_numpy().max() <= TOLERANCE
    described = requests.get(f"{servers['onnx'][0]}/model", timeout=10).json()
    assert described["runtime"] == "onnx" and described["version"] == "1"


def _odd_inputs() -> dict[str, str]:
    rng = np.random.default_rng(5)
    deep = rng.integers(0, 65535, (150, 200), dtype=np.uint16)
    skin = Image.fromarray(rng.integers(90, 200, (150, 200, 3), dtype=np.uint8))
    return {
        "1x1": _encoded(Image.new("RGB", (1, 1), (180, 120, 100))),
        "greyscale": _encoded(skin.convert("L")),
        "CMYK": _encoded(skin.convert("CMYK")),
        "16-bit": _encoded(Image.fromarray(deep), "PNG"),
        "noise": _encoded(Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8))),
        "black": _encoded(Image.new("RGB", (200, 150), (0, 0, 0))),
    }  # fmt: skip


def test_odd_inputs_get_the_same_400s_and_referrals(servers):
    for name, image in _odd_inputs().items():
        seen = {}
        for runtime, (url, _, _) in servers.items():
            response = _invoke(url, [{"image": image}])
            body = response.json()
            seen[runtime] = (
                response.status_code,
                body.get("message") if response.status_code != 200 else
                [(p["refer"], p["refer_reason"]) for p in body["predictions"]],
            )  # fmt: skip
        assert seen["onnx"] == seen["keras"], (name, seen)
        assert seen["onnx"][0] in (200, 400), (name, seen)


def _loaded_libraries(pid: int) -> str:
    """Every file mapped into ``pid`` and its children: the shared libraries it loaded."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    pids = [pid, *(int(p) for p in out.stdout.split())]
    maps = [Path(f"/proc/{p}/maps") for p in pids]
    return "\n".join(m.read_text() for m in maps if m.exists())


def test_its_process_never_loads_tensorflow(servers):
    """Read from the kernel's map of each server process: the Keras server has
    TensorFlow's library loaded, the exported one does not."""
    assert "_pywrap_tensorflow" in _loaded_libraries(servers["keras"][1])
    loaded = _loaded_libraries(servers["onnx"][1])
    assert "onnxruntime" in loaded and "tensorflow" not in loaded


def test_a_body_nested_a_hundred_thousand_levels_deep_gets_a_400(servers):
    body = "[" * 100_000 + "]" * 100_000
    for url, _, _ in servers.values():
        response = requests.post(
            f"{url}/invocations", data=body, headers={"Content-Type": "application/json"},
            timeout=60,
        )  # fmt: skip
        assert response.status_code == 400, response.text[:300]
        assert "nests deeper than" in response.json()["message"]
        assert requests.get(f"{url}/ping", timeout=10).ok


def _logged(folder: Path) -> pd.DataFrame:
    """Every record the server's prediction log has written to ``folder`` so far."""
    parts = [pd.read_parquet(p) for p in sorted(folder.rglob("*.parquet"))]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def test_it_logs_what_it_answers_and_follows_the_alias(servers, registry, synth_dir):
    url, _, folder = servers["onnx"]
    rows = _rows(synth_dir, 3)
    before = _logged(folder / "log")
    response = _invoke(url, rows)
    assert response.status_code == 200 and "embedding" not in response.json()["predictions"][0]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(_logged(folder / "log")) < len(before) + 3:
        time.sleep(0.5)
    records = _logged(folder / "log")
    assert len(records) >= len(before) + 3  # earlier tests' records may still arrive
    assert records["embedding"].map(len).min() > 0
    mlflow.MlflowClient(registry).set_registered_model_alias(NAME, "champion", "2")
    try:
        deadline = time.monotonic() + 60
        version = "1"
        while time.monotonic() < deadline and version != "2":
            time.sleep(1)
            version = _invoke(url, rows[:1]).headers["X-Model-Version"]
        assert version == "2"
        assert requests.get(f"{url}/model", timeout=10).json()["runtime"] == "onnx"
    finally:
        mlflow.MlflowClient(registry).set_registered_model_alias(NAME, "champion", "1")


def test_a_version_without_an_export_is_refused_before_the_server_starts(registry, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry, "SKINLESION_PROGRESS": "0"}
    command = [
        str(Path(sys.executable).with_name("skinlesion")),
        "serve", "--model", f"models:/{NAME}/3", "--runtime", "onnx", "--port", "1",
        "--params", str(ROOT / "params.yaml"),
    ]  # fmt: skip
    out = subprocess.run(
        command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert out.returncode == 1
    # the message names the command that makes the export
    assert f"skinlesion export models:/{NAME}/3 --log" in out.stderr, out.stderr[-2000:]
