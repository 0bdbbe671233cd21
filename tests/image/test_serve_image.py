"""The serving image: the champion that the step image trained and exported, served by
`skinlesion serve --runtime onnx` in an image without TensorFlow, answering as the Keras
server did, behind an MLflow server as on the cluster."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from skinlesion.labels import CLASSES
from skinlesion.model.portable import TOLERANCE
from tests.helpers import free_port
from tests.image.conftest import engine, head_commit, image_revision, refusal

pytestmark = pytest.mark.image
SERVE_IMAGE_ENV = "SKINLESION_SERVE_IMAGE_UNDER_TEST"


@pytest.fixture(scope="module")
def serve_image() -> str:
    name = os.environ.get(SERVE_IMAGE_ENV)
    if not name:
        pytest.skip(f"no serving image under test (set {SERVE_IMAGE_ENV}: `make image-test`)")
    reason = refusal(image_revision(name), head_commit(), False)
    if reason:
        pytest.fail(f"refusing to test {name}: {reason}")
    return name


def _detached(image: str, work: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """A container of ``image`` on the host network with ``work`` at /work; its name."""
    name = f"skinlesion-test-{uuid.uuid4().hex[:8]}"
    flags = [f"--env={k}={v}" for k, v in (env or {}).items()]
    subprocess.run(
        [engine(), "run", "-d", "--rm", "--network=host", f"--name={name}",
         f"--volume={work}:/work", *flags, image, *args],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return name


def _ready(url: str, container: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=5).ok:
                return
        except requests.RequestException:
            time.sleep(1)
    logs = subprocess.run([engine(), "logs", container], capture_output=True, text=True)
    pytest.fail(f"{container} did not answer {url}: {(logs.stdout + logs.stderr)[-3000:]}")


@pytest.fixture(scope="module")
def onnx_server(steps_run, image: str, serve_image: str) -> Iterator[tuple[str, Path]]:
    """The registry the step image wrote, behind `mlflow server` (run in the step image),
    and the serving image's server of its champion."""
    work, done = steps_run
    assert done.returncode == 0, done.stderr[-3000:]
    registry_port, port = free_port(), free_port()
    containers = [
        _detached(
            image, work, "mlflow", "server", "--host", "127.0.0.1", "--port", str(registry_port),
            "--backend-store-uri", "sqlite:////work/mlflow.db", "--workers", "1",
        )
    ]  # fmt: skip
    try:
        registry = f"http://127.0.0.1:{registry_port}"
        _ready(f"{registry}/health", containers[0])
        containers.append(
            _detached(
                serve_image, work, "skinlesion", "serve", "--runtime", "onnx",
                "--model", "models:/lesions@champion", "--port", str(port),
                env={"MLFLOW_TRACKING_URI": registry},
            )
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        _ready(f"{url}/ping", containers[1])
        yield url, work
    finally:
        for name in containers:
            subprocess.run([engine(), "stop", "-t", "5", name], capture_output=True)


def test_the_serving_image_answers_as_the_keras_server(onnx_server):
    url, work = onnx_server
    kept = json.loads((work / "keras-answers.json").read_text())
    response = requests.post(
        f"{url}/invocations", json={"dataframe_records": kept["rows"]}, timeout=60
    )
    assert response.status_code == 200, response.text[-2000:]
    assert response.headers["X-Model-Version"] == "1"
    for want, got in zip(kept["answers"], response.json()["predictions"], strict=True):
        for key in ("prediction", "prediction_set", "refer", "refer_reason"):
            assert got[key] == want[key], key
        assert max(abs(got[c] - want[c]) for c in CLASSES) <= TOLERANCE
    assert requests.get(f"{url}/model", timeout=10).json()["runtime"] == "onnx"


def test_the_serving_image_holds_no_tensorflow_and_is_smaller(serve_image: str, image: str):
    found = subprocess.run(
        [engine(), "run", "--rm", serve_image, "python", "-c",
         "import importlib.util as u; print([m for m in ('tensorflow', 'keras', 'sklearn')"
         " if u.find_spec(m)])"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert found.returncode == 0 and found.stdout.strip() == "[]", found.stderr[-2000:]

    def size(name: str) -> int:
        shown = subprocess.run(
            [engine(), "image", "inspect", "--format", "{{.Size}}", name],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return int(shown.stdout)

    assert size(serve_image) * 3 < size(image)
