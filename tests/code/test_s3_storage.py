"""S3 through boto3 against a local S3 endpoint (moto server on 127.0.0.1): bucket
bootstrap, the flow's outputs pushed to and pulled from the DVC remote, and MLflow
artifacts proxied to S3."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skinlesion.cli.main import command_line
from skinlesion.data.storage import StorageError, bootstrap_buckets, s3_client
from tests.helpers import free_port, running_mlflow_server

pytestmark = [pytest.mark.code, pytest.mark.integration]
app = command_line()
BIN = Path(sys.executable).parent


def test_bootstrap_creates_then_finds_buckets_with_read_write_access(s3_env):
    result = CliRunner().invoke(
        app, ["infra", "bootstrap-buckets", "--bucket", "b-one", "--bucket", "b-two"]
    )
    assert result.exit_code == 0, result.output
    assert "b-one: created, read/write ok" in result.output
    again = bootstrap_buckets(["b-one"])
    assert not again[0].created and again[0].read_write
    assert s3_client().list_objects_v2(Bucket="b-one").get("KeyCount", 0) == 0  # probe gone


def test_unreachable_endpoint_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StorageError, match="cannot reach the S3 endpoint"):
        bootstrap_buckets(["x"], endpoint_url=closed)


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_dvc_pushes_the_flows_outputs_and_a_fresh_checkout_pulls_them(s3_env, tmp_path, params):
    """The documented use of the S3 remote: the flow's cached outputs (here the split
    manifest) go up with `dvc push`; a checkout without them gets them with `dvc pull`."""
    from skinlesion.data.synth import make_synthetic_dataset
    from tests.helpers import ROOT, write_params

    bootstrap_buckets(["skinlesion-data"])
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "dvc.yaml", repo)
    shutil.copytree(ROOT / "skinlesion", repo / "skinlesion")
    write_params(params, repo / "params.yaml")
    make_synthetic_dataset(repo / params["data"]["raw_dir"], n_images=60, seed=5)
    _run(["git", "init", "-q"], repo)
    _run([str(BIN / "dvc"), "init", "-q"], repo)
    _run([str(BIN / "dvc"), "remote", "add", "-d", "storage", "s3://skinlesion-data/dvc"], repo)
    # The endpoint goes to the git-ignored local config, never to the committed one.
    _run([str(BIN / "dvc"), "remote", "modify", "--local", "storage", "endpointurl", s3_env], repo)
    assert s3_env not in (repo / ".dvc/config").read_text()
    _run([str(BIN / "dvc"), "repro", "split"], repo)
    manifest = repo / "data/split/manifest.csv"
    made = manifest.read_bytes()
    _run([str(BIN / "dvc"), "push"], repo)
    manifest.unlink()
    shutil.rmtree(repo / ".dvc" / "cache")
    _run([str(BIN / "dvc"), "pull", "split"], repo)
    assert manifest.read_bytes() == made
    assert "up to date" in _run([str(BIN / "dvc"), "status", "split"], repo).lower()


def test_mlflow_server_proxies_artifacts_to_s3(s3_env, tmp_path):
    import mlflow

    bootstrap_buckets(["skinlesion-mlflow"])
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_env}
    with running_mlflow_server(tmp_path, "s3://skinlesion-mlflow/artifacts", env) as url:
        mlflow.set_tracking_uri(url)
        with mlflow.start_run() as run:  # mlflow-artifacts:/ - the server writes to S3
            mlflow.log_text("model card", "card.md")
        keys = [
            o["Key"] for o in s3_client().list_objects_v2(Bucket="skinlesion-mlflow")["Contents"]
        ]
        assert any(k.endswith(f"{run.info.run_id}/artifacts/card.md") for k in keys)
        local = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="card.md", dst_path=str(tmp_path)
        )
        assert Path(local).read_text() == "model card"


def test_the_prediction_log_writes_parquet_under_an_s3_prefix(s3_env):
    """The cluster's sink: rotated Parquet files under the prefix, dated, readable."""
    import io

    import pandas as pd

    from skinlesion.serving.prediction_log import PredictionLog, sink_for

    client = s3_client()
    client.create_bucket(Bucket="sink-logs")
    log = PredictionLog(sink_for("s3://sink-logs/prediction-log"), rotate_records=3)
    log.put([{"request_id": f"r{i}", "prediction": "nv"} for i in range(5)])
    log.close()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="sink-logs")["Contents"]]
    assert len(keys) == 2 and all(k.startswith("prediction-log/date=") for k in keys)
    tables = [
        pd.read_parquet(io.BytesIO(client.get_object(Bucket="sink-logs", Key=k)["Body"].read()))
        for k in keys
    ]
    assert sorted(pd.concat(tables)["request_id"]) == [f"r{i}" for i in range(5)]
    assert log.stats()["written"] == 5


def test_the_retention_step_prunes_images_under_an_s3_prefix(s3_env):
    """`prune-log` on the cluster's log: an old record's image is emptied in place, the
    record kept; a new one keeps its image."""
    import io

    import pandas as pd

    from skinlesion.serving.prediction_log import prune_images, read_records

    client = s3_client()
    client.create_bucket(Bucket="retained-logs")
    now = pd.Timestamp.now(tz="UTC")
    for age, image in ((120, "b2xk"), (1, "bmV3")):
        day = (now - pd.Timedelta(days=age)).strftime("%Y-%m-%d")
        body = io.BytesIO()
        pd.DataFrame({"time": [f"{day}T08:00:00.000Z"], "image": [image]}).to_parquet(body)
        client.put_object(
            Bucket="retained-logs", Key=f"log/date={day}/part.parquet", Body=body.getvalue()
        )
    pruned = prune_images("s3://retained-logs/log", now - pd.Timedelta(days=90))
    assert (pruned.images_deleted, pruned.files_rewritten) == (1, 1)
    records = read_records("s3://retained-logs/log").sort_values("time")
    assert len(records) == 2 and records["image"].isna().tolist() == [True, False]
