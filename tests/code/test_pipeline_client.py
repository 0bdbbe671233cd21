"""`skinlesion pipeline submit|schedule` against a fake KFP API server on 127.0.0.1."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipelines.client import check_cron, pipeline_arguments
from skinlesion.cli.main import command_line
from skinlesion.config.files import ParamsError
from skinlesion.config.parse import for_cluster
from tests.fakes.kfp_api import API, running_fake_kfp
from tests.helpers import ROOT

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
    expected = for_cluster(settings).raw()
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


def _schedule(fake_kfp, *extra: str):
    return CliRunner().invoke(
        command_line(),
        ["pipeline", "schedule", "--host", fake_kfp.url, "--name", "weekly", *extra, *PARAMS],
    )


@pytest.mark.extended  # scheduling itself stays in the suite (recurring, no catch-up)
def test_scheduling_a_name_again_replaces_it_and_never_leaves_two(fake_kfp):
    """Running `pipeline schedule` twice (a new cron, a new pipeline) leaves exactly one
    recurring run of that name, the new one; the old one is disabled before the new one
    is created, so two are never active at once; another name is left alone."""
    assert _schedule(fake_kfp).exit_code == 0
    other = CliRunner().invoke(
        command_line(), ["pipeline", "schedule", "--host", fake_kfp.url, "--name", "nightly",
                         "--cron", "0 0 1 * * *", *PARAMS],
    )  # fmt: skip
    assert other.exit_code == 0, other.output
    [first] = [j for j in fake_kfp.active() if j["display_name"] == "weekly"]
    again = _schedule(fake_kfp, "--cron", "0 0 4 * * 2", "--param", "train.cnn.epochs=80")
    assert again.exit_code == 0, again.output
    assert f"replaced recurring run {first['recurring_run_id']}" in again.output
    weekly = [j for j in fake_kfp.recurring_runs.values() if j["display_name"] == "weekly"]
    assert len(weekly) == 1 and weekly[0]["trigger"]["cron_schedule"]["cron"] == "0 0 4 * * 2"
    assert len(fake_kfp.active()) == 2  # weekly (new) and nightly
    calls = [(m, p) for m, p, _ in fake_kfp.requests]
    old = f"{API}/recurringruns/{first['recurring_run_id']}"
    order = [calls.index(("POST", f"{old}:disable")), len(calls) - 1 - calls[::-1].index(
        ("POST", f"{API}/recurringruns")), calls.index(("DELETE", old))]  # fmt: skip
    assert order == sorted(order)  # disable old, create new, delete old

    listed = CliRunner().invoke(
        command_line(), ["pipeline", "schedules", "--host", fake_kfp.url, *PARAMS]
    )
    assert listed.exit_code == 0, listed.output
    lines = listed.output.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["nightly", "weekly"]
    assert "0 0 4 * * 2\tenabled" in lines[1]


@pytest.mark.extended
def test_a_failed_replacement_keeps_the_old_schedule(fake_kfp):
    assert _schedule(fake_kfp).exit_code == 0
    [old] = fake_kfp.active()
    fake_kfp.fail_recurring_run = True
    failed = _schedule(fake_kfp, "--cron", "0 0 4 * * 2")
    assert failed.exit_code == 1 and "enabled again" in failed.output
    assert fake_kfp.active() == [old]  # the old one runs on, unchanged


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


def _monitoring_schedule(fake_kfp, *extra: str):
    return CliRunner().invoke(
        command_line(),
        ["pipeline", "schedule", "--pipeline", "monitoring", "--host", fake_kfp.url, *extra,
         *PARAMS],
    )  # fmt: skip


def test_the_monitoring_schedule_is_upserted_in_its_own_experiment(fake_kfp, params):
    """The monitoring pipeline on cluster.monitoring_schedule, under its default name:
    scheduled twice, one recurring run is left, beside the training schedule."""
    assert _schedule(fake_kfp).exit_code == 0
    first = _monitoring_schedule(fake_kfp)
    assert first.exit_code == 0, first.output
    again = _monitoring_schedule(fake_kfp, "--param", "since=2026-11-01")
    assert again.exit_code == 0, again.output
    assert "replaced recurring run" in again.output
    monitoring = [
        j for j in fake_kfp.recurring_runs.values()
        if j["display_name"] == "skinlesion-monitoring-scheduled"
    ]  # fmt: skip
    assert len(monitoring) == 1 and len(fake_kfp.active()) == 2
    [job] = monitoring
    schedule = params["cluster"]["monitoring_schedule"]
    assert job["trigger"]["cron_schedule"]["cron"] == schedule["cron"]
    assert job["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "skinlesion-monitoring"
    assert job["runtime_config"]["parameters"]["since"] == "2026-11-01"
    experiments = {e["display_name"] for e in fake_kfp.bodies("POST", f"{API}/experiments")}
    assert schedule["experiment"] in experiments
    listed = CliRunner().invoke(
        command_line(),
        ["pipeline", "schedules", "--pipeline", "monitoring", "--host", fake_kfp.url, *PARAMS],
    )
    assert listed.output.startswith("skinlesion-monitoring-scheduled\t"), listed.output
