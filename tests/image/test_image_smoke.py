"""The built step image on its own: non-root, its CLI, the data steps, one training
epoch, a short transfer run from the packaged ImageNet weights, a one-trial search and
serving the trained model on synthetic data, and
validation of the real sample when it is on this machine."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import REAL_DATA, free_port, small_params, write_params
from tests.image.conftest import engine_run, head_commit

pytestmark = pytest.mark.image

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
import base64, glob, time, requests
url = "http://127.0.0.1:PORT"
for _ in range(240):
    try:
        if requests.get(url + "/ping", timeout=5).ok:
            break
    except requests.RequestException:
        pass
    time.sleep(0.5)
image = base64.b64encode(open(sorted(glob.glob("synth/**/*.jpg", recursive=True))[0], "rb").read())
row = {"image": image.decode(), "age": 50, "sex": "female", "localization": "back"}
answer = requests.post(url + "/invocations", json={"dataframe_records": [row]}, timeout=60)
print("served", answer.status_code, answer.headers.get("x-model-version"), answer.json())
PY
kill "$SERVER"
"""


def test_cli_data_steps_one_epoch_and_serving_run_as_non_root(image, params, tmp_path):
    work = tmp_path / "work"
    work.mkdir(mode=0o777)
    work.chmod(0o777)  # the image's user (uid 10001) writes here
    one_epoch = small_params(params, cnn={"epochs": 1})
    write_params(one_epoch, work / "one-epoch.yaml")
    steps = STEPS.replace("PORT", str(free_port()))
    done = engine_run(image, "sh", "-c", steps, mounts={str(work): "/work"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.splitlines()[0] == "10001"
    assert "120 rows passed" in done.stdout + done.stderr
    assert "{'complete': 1}; best trial 0" in done.stdout  # the search runs in the image
    report = json.loads((work / "report" / "metrics.json").read_text())
    assert report["epochs_run"] == 1 and (work / "cnn.keras").is_file()
    # the transfer model from the ImageNet weights the image carries (no network here)
    lite = json.loads((work / "lite-report" / "metrics.json").read_text())
    assert lite["epochs_run"] >= 2 and (work / "lite.keras").is_file()
    [served] = [line for line in done.stdout.splitlines() if line.startswith("served ")]
    assert served.startswith("served 200 1 {'predictions': [{'prediction': ")  # the champion


def test_params_and_commit_are_in_the_image(image):
    shown = engine_run(
        image, "sh", "-c", 'test -f "$SKINLESION_PARAMS" && echo "$SKINLESION_GIT_COMMIT"'
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == head_commit()  # `make image` built it from HEAD


def test_validates_the_real_sample_read_only(image, tmp_path):
    if not (REAL_DATA / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"real HAM10000 data not found at {REAL_DATA}")
    out = tmp_path / "validation"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    done = engine_run(
        image,
        "skinlesion",
        "validate",
        "--data-dir",
        "/data",
        "--report-dir",
        "/out",
        mounts={str(Path(REAL_DATA).resolve()): "/data:ro", str(out): "/out"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = len(pd.read_csv(REAL_DATA / "HAM10000_metadata.csv"))
    assert f"{rows} rows passed" in done.stdout + done.stderr
