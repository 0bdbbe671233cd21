"""The whole local flow through real DVC on synthetic data: `dvc repro` runs validate ->
split -> eda -> oversample -> train -> evaluate -> compare -> promote, and a second
`dvc repro` does nothing; `train.models` decides which models run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from skinlesion.data.synth import make_synthetic_dataset
from tests.helpers import ROOT, small_params, write_params

pytestmark = pytest.mark.model


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


DVC = str(Path(sys.executable).parent / "dvc")


def _dvc_repo(tmp_path: Path, small: dict) -> tuple[Path, dict[str, str]]:
    """A git + DVC repository with the project's dvc.yaml and library, ``small`` as its
    params and 150 synthetic images at ``data.raw_dir``; and the environment to run in."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "dvc.yaml", repo)
    shutil.copytree(ROOT / "tune", repo / "tune", ignore=shutil.ignore_patterns("work"))
    shutil.copytree(ROOT / "skinlesion", repo / "skinlesion")  # stage dependencies
    write_params(small, repo / "params.yaml")
    make_synthetic_dataset(repo / small["data"]["raw_dir"], n_images=150, seed=2)
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SKINLESION_PROGRESS": "0",
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    _run(["git", "init", "-q"], repo, env)
    _run([DVC, "init", "-q"], repo, env)
    return repo, env


def _repo(tmp_path: Path, params: dict, models: list[str]) -> tuple[Path, dict, dict]:
    """A DVC repo on synthetic data whose params train ``models`` of a quick CNN and two
    one-epoch variants of it under other names (``cnn_small``, ``cnn_tiny``)."""
    small = small_params(params, cnn={"epochs": 2})
    for variant in ("cnn_small", "cnn_tiny"):
        small["train"][variant] = {
            **small["train"]["cnn"], "recipe": "cnn", "filters": [8], "epochs": 1
        }  # fmt: skip
    small["train"]["models"] = models
    small["train"]["ensembles"] = {}
    repo, env = _dvc_repo(tmp_path, small)
    return repo, small, env


def _first_repro(tmp_path: Path, params: dict) -> tuple[Path, dict, dict]:
    """The whole flow once, on one CNN (with a two-trial search space, off the path)."""
    repo, small, env = _repo(tmp_path, params, ["cnn"])
    small["tune"].update(trials=2, pruner="none")
    # 16, the current value, lies outside the space: whichever trial wins, applying it
    # changes train.cnn, and with it the train stage
    small["tune"]["cnn"] = {"space": {"train.cnn.dense_units": {"choices": [8, 12]}}}
    write_params(small, repo / "params.yaml")
    first = _run([DVC, "repro"], repo, env)
    assert "tune" not in first.stdout  # the search is off the default path
    assert "resnet152v2" not in first.stdout and "cnn_small" not in first.stdout
    stages = ("validate", "split", "eda", "oversample", "train@cnn", "evaluate@cnn", "compare")
    for stage in stages:
        assert f"Running stage '{stage}'" in first.stdout, stage
    assert "Running stage 'promote'" in first.stdout
    decision = json.loads((repo / "reports/promotion/decision.json").read_text())
    assert decision["promoted"] is True and decision["champion_version"] is None
    assert (repo / "models/cnn.keras").is_file()
    metrics = json.loads((repo / "reports/eval/cnn/metrics.json").read_text())
    assert "balanced_accuracy" in metrics
    return repo, small, env


def test_dvc_repro_runs_the_flow_and_then_nothing(tmp_path, params):
    """The whole flow once; a second `dvc repro` does nothing."""
    repo, _, env = _first_repro(tmp_path, params)
    second = _run([DVC, "repro"], repo, env)
    assert "Running stage" not in second.stdout
    assert "up to date" in second.stdout


@pytest.mark.extended  # the flow runs in the suite, above; ensembles in the cluster miniature
def test_dvc_follows_the_models_and_searches_off_path(tmp_path, params):
    """After the flow, one more model in `train.models`, and an ensemble in
    `train.ensembles`, run only their own stages and promotion, which reads every model's
    reports; the search runs only when asked, and applying its result makes training
    stale."""
    repo, small, env = _first_repro(tmp_path, params)
    # one more model and an ensemble of it with the first (cnn_tiny stays out: a section
    # that train.models does not list never runs)
    small["train"]["models"] = ["cnn", "cnn_small"]
    small["train"]["ensembles"] = {
        "pair": {"members": ["cnn", "cnn_small"], "combine": "geometric"}
    }
    write_params(small, repo / "params.yaml")
    third = _run([DVC, "repro"], repo, env)
    assert "Running stage 'train@cnn_small'" in third.stdout
    assert "Running stage 'evaluate@cnn_small'" in third.stdout
    assert "cnn_tiny" not in third.stdout  # a section train.models does not list never runs
    assert "Running stage 'train@cnn'" not in third.stdout  # its section did not change
    assert "Running stage 'ensemble@pair'" in third.stdout  # after its members, not retrained
    assert "Running stage 'promote'" in third.stdout
    decision = json.loads((repo / "reports/promotion/decision.json").read_text())
    assert set(decision["candidates"]) == {"cnn", "cnn_small", "pair"}
    built = json.loads((repo / "reports/train/pair/metrics.json").read_text())
    assert built["members"] == ["cnn", "cnn_small"] and 0 <= built["val_refer_rate"] <= 1
    assert "conformal" in json.loads((repo / "reports/eval/pair/metrics.json").read_text())
    assert "Running stage 'compare'" in third.stdout  # every pair, on the same test lesions
    comparison = json.loads((repo / "reports/compare/comparison.json").read_text())
    assert (
        len(comparison["pairs"]) == 3
        and "| cnn - cnn_small |" in (repo / "reports/compare/comparison.md").read_text()
    )

    searched = _run([DVC, "repro", "tune/dvc.yaml"], repo, env)
    assert "Running stage 'tune/dvc.yaml:tune@cnn'" in searched.stdout
    summary = json.loads((repo / "reports/tune/cnn/summary.json").read_text())
    assert summary["trials"] == {"complete": 2}
    again = _run([DVC, "repro", "tune/dvc.yaml"], repo, env)
    assert "Running stage" not in again.stdout
    _run(["skinlesion", "tune", "apply", "reports/tune/cnn/best_params.yaml"], repo, env)
    status = _run([DVC, "status"], repo, env)
    assert "train@cnn" in status.stdout  # applied: the model's params changed


def test_a_misspelt_key_stops_dvc_repro_before_any_work(tmp_path, params):
    repo, small, env = _repo(tmp_path, params, ["cnn"])
    small["train"]["cnn"]["epoch"] = small["train"]["cnn"].pop("epochs")
    write_params(small, repo / "params.yaml")

    result = subprocess.run([DVC, "repro"], cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "train.cnn.epoch: unknown key" in output
    assert "train.cnn.epochs: missing" in output
    assert not (repo / "reports/validation/validation.json").exists()


@pytest.mark.extended  # the flow itself runs in the suite; DVC push/pull in test_s3_storage
def test_tracked_raw_data_goes_to_the_remote_and_a_fresh_clone_reproduces(tmp_path, params, s3_env):
    """The raw data under DVC: `dvc add` of a copy, `dvc push` to the S3 remote (moto on
    127.0.0.1); a fresh clone restores exactly that version with `dvc pull`, and its
    `dvc repro` reads it."""
    from skinlesion.data.storage import bootstrap_buckets
    from skinlesion.data.versions import data_version

    bootstrap_buckets(["skinlesion-data"])
    repo, small, env = _repo(tmp_path, params, ["cnn"])

    raw = small["data"]["raw_dir"]
    version = data_version(repo / raw)
    shutil.copy(ROOT / ".gitignore", repo)
    _run([DVC, "remote", "add", "-d", "storage", "s3://skinlesion-data/dvc"], repo, env)
    _run([DVC, "remote", "modify", "--local", "storage", "endpointurl", s3_env], repo, env)
    _run([DVC, "add", raw], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example", "commit", "-qm", "data"],
        repo,
        env,
    )
    assert (repo / f"{raw}.dvc").is_file()  # committed, not ignored
    assert f"{raw}.dvc" in _run(["git", "ls-files"], repo, env).stdout
    pushed = _run([DVC, "push"], repo, env)
    assert "pushed" in pushed.stdout, pushed.stdout + pushed.stderr

    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    assert not (clone / raw).exists()
    _run([DVC, "remote", "modify", "--local", "storage", "endpointurl", s3_env], clone, env)
    _run([DVC, "pull", f"{raw}.dvc"], clone, env)  # what `make data` does on a clone
    assert data_version(clone / raw) == version
    # the flow reads the pulled data (the whole flow's run is the first test's part)
    result = _run([DVC, "repro", "oversample"], clone, env)
    assert "Running stage 'split'" in result.stdout
    manifest = pd.read_csv(clone / "data/oversampled/manifest.csv")
    assert set(manifest["image_id"]) == set(
        pd.read_csv(clone / raw / "HAM10000_metadata.csv")["image_id"]
    )
