"""The built step image on its own: non-root, its CLI, the data steps, one training
epoch, a short transfer run from the packaged ImageNet weights, a one-trial search,
serving the trained model on synthetic data and exporting it, and validation of the real
sample when it is on this machine."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import REAL_DATA
from tests.image.conftest import engine_run, head_commit

pytestmark = pytest.mark.image


def test_cli_data_steps_one_epoch_and_serving_run_as_non_root(steps_run):
    work, done = steps_run
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
    assert "exported models:/lesions/1" in done.stdout  # and its export, logged to its run


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
