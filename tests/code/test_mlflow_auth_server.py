"""The cluster's MLflow server configuration, run for real on 127.0.0.1: the basic-auth
app of infra/k8s (`--app-name basic-auth`, config from MLFLOW_AUTH_CONFIG_PATH, CSRF key
from MLFLOW_FLASK_SERVER_SECRET_KEY, both from the mlflow-auth Secret) refuses
anonymous calls, and the credentials that pipeline steps get from their Secret
(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD) let a run be tracked."""

from __future__ import annotations

import os
import secrets

import mlflow
import pytest
import requests

from tests.helpers import running_mlflow_server

pytestmark = [pytest.mark.code, pytest.mark.integration]


def test_basic_auth_server_refuses_anonymous_and_accepts_the_secret_keys(tmp_path, monkeypatch):
    password = secrets.token_urlsafe(18)  # made here, never a committed literal
    config = tmp_path / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'auth.db'}\n"
        "admin_username = admin\n"
        f"admin_password = {password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),
    }
    with running_mlflow_server(
        tmp_path, str(tmp_path / "artifacts"), env, ("--app-name", "basic-auth")
    ) as url:
        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert requests.get(search, timeout=30).status_code == 401
        assert requests.get(search, auth=("admin", "wrong-password"), timeout=30).status_code == 401

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        client = mlflow.MlflowClient(url)
        run = client.create_run(client.create_experiment("auth-check"))
        client.log_metric(run.info.run_id, "balanced_accuracy", 0.6)
        stored = client.get_run(run.info.run_id)
        assert stored.data.metrics["balanced_accuracy"] == 0.6
