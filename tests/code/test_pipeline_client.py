"""`skinlesion pipeline submit|schedule` against a fake KFP API server on 127.0.0.1."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipelines.client import check_cron, pipeline_arguments
from skinlesion.cli.main import command_line
from skinlesion.config.files import ParamsError
from tests.conftest import ROOT
from tests.fakes.kfp_api import API, running_fake_kfp

pytestmark = pytest.mark.code
PARAMS = ["--params", str(ROOT / "params.yaml")]


@pytest.fixture
def fake_kfp():
    with running_fake_kfp() as fake:
        yield fake


def test_arguments_change_only_what_is_named(settings):
    assert pipeline_arguments(settings, []) == {}
    arguments = pipeline_arguments(
        settings, ["train.cnn.epochs=80", "data_uri=s3://b/v2", "data_version=abc"]
    )
    assert arguments["data_uri"] == "s3://b/v2" and arguments["data_version"] == "abc"
    expected = settings.for_cluster().raw()
    expected["train"]["cnn"]["epochs"] = 80
    assert json.loads(arguments["params"]) == expected  # JSON text: every type kept


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("train.cnn.epochz=3", "unknown parameter"),
        ("epochs", "KEY=VALUE"),
        ("train.cnn.epochs=many", "train.cnn.epochs: Input should be a valid integer"),
    ],
)
def test_bad_overrides_are_named(settings, assignment, message):
    with pytest.raises(ParamsError, match=message):
        pipeline_arguments(settings, [assignment])


def test_submit_creates_experiment_and_run(fake_kfp):
    result = CliRunner().invoke(
        command_line(),
        [
            "pipeline",
            "submit",
            "--host",
            fake_kfp.url,
            "--param",
            "train.cnn.epochs=3",
            "--run-name",
            "try-3-epochs",
            *PARAMS,
        ],
    )
    assert result.exit_code == 0, result.output
    [experiment] = fake_kfp.bodies("POST", f"{API}/experiments")
    assert experiment["display_name"] == "skinlesion-retraining"
    [run] = fake_kfp.bodies("POST", f"{API}/runs")
    assert run["display_name"] == "try-3-epochs"
    assert run["service_account"] == "skinlesion-pipeline-runner"
    assert run["experiment_id"] in fake_kfp.experiments
    package = run["pipeline_spec"]  # the pipeline with its Kubernetes platform spec
    assert package["pipeline_spec"]["pipelineInfo"]["name"] == "skinlesion-training"
    assert "kubernetes" in package["platform_spec"]["platforms"]
    sent = json.loads(run["runtime_config"]["parameters"]["params"])
    assert sent["train"]["cnn"]["epochs"] == 3
    assert "/#/runs/details/" in result.output


def test_schedule_is_a_recurring_run_without_catch_up(fake_kfp, params):
    result = CliRunner().invoke(
        command_line(),
        ["pipeline", "schedule", "--host", fake_kfp.url, "--name", "weekly", *PARAMS],
    )
    assert result.exit_code == 0, result.output
    [job] = fake_kfp.bodies("POST", f"{API}/recurringruns")
    assert job["display_name"] == "weekly"
    assert job["trigger"]["cron_schedule"]["cron"] == params["cluster"]["schedule"]["cron"]
    assert int(job["max_concurrency"]) == 1
    assert job["no_catchup"] is True
    assert job["service_account"] == "skinlesion-pipeline-runner"
    assert job["mode"] == "ENABLE"
    assert job["experiment_id"] in fake_kfp.experiments


def test_five_field_cron_is_refused_before_any_request(fake_kfp):
    result = CliRunner().invoke(
        command_line(),
        ["pipeline", "schedule", "--host", fake_kfp.url, "--cron", "0 3 * * 1", *PARAMS],
    )
    assert result.exit_code == 1
    assert "needs six" in result.output
    assert fake_kfp.requests == []


def test_check_cron_accepts_six_fields():
    assert check_cron("0 30 2 * * *") == "0 30 2 * * *"
