"""The step image under test: `make image-test` names it in $SKINLESION_IMAGE_UNDER_TEST
and the engine (docker or podman) in $SKINLESION_ENGINE.

Without the image variable these tests skip (a plain `pytest` has no image to test); with
it, a missing engine or image fails them, so CI cannot pass by skipping. So does an image
that was not built from this checkout's HEAD, or a checkout with uncommitted changes to
tracked files: what would pass would not be what is committed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

IMAGE_ENV = "SKINLESION_IMAGE_UNDER_TEST"
ENGINE_ENV = "SKINLESION_ENGINE"
REVISION_LABEL = "org.opencontainers.image.revision"
ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def head_commit() -> str:
    """The checkout's HEAD: the commit an image built by `make image` here must carry."""
    return _git("rev-parse", "HEAD").stdout.strip()


def engine() -> str:
    """The container engine `make image` used: $SKINLESION_ENGINE, else docker or podman."""
    chosen = os.environ.get(ENGINE_ENV) or shutil.which("docker") or shutil.which("podman")
    if not chosen:
        pytest.fail("no docker or podman CLI: run infra/docker/local-engine.sh or install one")
    return chosen


def image_revision(name: str) -> str:
    """The image's ``org.opencontainers.image.revision`` label ("" when it has none)."""
    found = subprocess.run(
        [engine(), "image", "inspect", "--format", "{{json .Config.Labels}}", name],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        pytest.fail(f"image {name} not found: build it with `make image`")
    return (json.loads(found.stdout) or {}).get(REVISION_LABEL, "")


def refusal(revision: str, head: str, dirty: bool) -> str | None:
    """Why an image labelled ``revision`` is not the checkout at ``head`` (None: it is)."""
    if dirty:
        return "tracked files differ from HEAD: commit them, then `make image`"
    if revision != head:
        built = revision or "an unknown revision"
        return f"the image was built from {built}, the checkout is at {head}: run `make image`"
    return None


@pytest.fixture(scope="session")
def image() -> str:
    name = os.environ.get(IMAGE_ENV)
    if not name:
        pytest.skip(f"no image under test (set {IMAGE_ENV}, or run `make image-test`)")
    dirty = _git("diff", "--quiet", "HEAD").returncode != 0
    reason = refusal(image_revision(name), head_commit(), dirty)
    if reason:
        pytest.fail(f"refusing to test {name}: {reason}")
    return name


def engine_run(
    image: str, *args: str, mounts: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """`ENGINE run --rm` on the host network, with ``mounts`` (host path -> container
    path, ``:ro`` suffix allowed on the container side)."""
    volumes = [f"--volume={host}:{inside}" for host, inside in (mounts or {}).items()]
    return subprocess.run(
        [engine(), "run", "--rm", "--network=host", *volumes, image, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# What a user does with the step image, on synthetic data: the data steps, one epoch of
# each model, a one-trial search, registering and serving the CNN (the Keras server's
# answers kept for the serving image's test), and its export logged.
STEPS = """
set -e
id -u
skinlesion --help > /dev/null
cd /work
skinlesion data synth --out synth --n 120
skinlesion validate --data-dir synth --report-dir validation
skinlesion split --data-dir synth --out split.csv
skinlesion oversample --manifest split.csv --out train.csv
skinlesion train --model cnn --manifest train.csv --data-dir synth --out cnn.keras \
    --report-dir report --params one-epoch.yaml
skinlesion train --model efficientnet_lite --manifest train.csv --data-dir synth \
    --out lite.keras --report-dir lite-report --params one-epoch.yaml
skinlesion tune --model cnn --manifest train.csv --data-dir synth --trials 1 \
    --params one-epoch.yaml
python - <<'PY'
import json, mlflow
mlflow.set_tracking_uri("sqlite:///mlflow.db")
version = mlflow.register_model(json.load(open("report/metrics.json"))["model_uri"], "lesions")
mlflow.MlflowClient().set_registered_model_alias("lesions", "champion", version.version)
PY
skinlesion serve --model models:/lesions@champion --port PORT > serve.log 2>&1 &
SERVER=$!
python - <<'PY'
import base64, glob, json, time, requests
url = "http://127.0.0.1:PORT"
for _ in range(240):
    try:
        if requests.get(url + "/ping", timeout=5).ok:
            break
    except requests.RequestException:
        pass
    time.sleep(0.5)
files = sorted(glob.glob("synth/**/*.jpg", recursive=True))[:8]
rows = [
    {"image": base64.b64encode(open(f, "rb").read()).decode(), "age": 50, "sex": "female",
     "localization": "back"}
    for f in files
]
answer = requests.post(url + "/invocations", json={"dataframe_records": rows[:1]}, timeout=60)
print("served", answer.status_code, answer.headers.get("x-model-version"), answer.json())
every = requests.post(url + "/invocations", json={"dataframe_records": rows}, timeout=60)
json.dump({"rows": rows, "answers": every.json()["predictions"]}, open("keras-answers.json", "w"))
PY
kill "$SERVER"
skinlesion export models:/lesions@champion --log
"""


@pytest.fixture(scope="session")
def steps_run(
    image: str, params: dict, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess]:
    """:data:`STEPS` run once in the step image: its folder (``/work`` inside) and output."""
    from tests.helpers import free_port, small_params, write_params

    work = tmp_path_factory.mktemp("work")
    work.chmod(0o777)  # the image's user (uid 10001) writes here
    write_params(small_params(params, cnn={"epochs": 1}), work / "one-epoch.yaml")
    steps = STEPS.replace("PORT", str(free_port()))
    return work, engine_run(image, "sh", "-c", steps, mounts={str(work): "/work"})
