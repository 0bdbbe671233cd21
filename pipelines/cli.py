"""`skinlesion pipeline …`: compile and submit the Kubeflow training, tuning, scoring and
monitoring pipelines, and schedule training and monitoring.

A command group of its own, registered through the ``skinlesion.commands`` entry point
(pyproject.toml), so that the library (``skinlesion``) never imports the pipeline code:
the arrows go pipelines -> components -> skinlesion only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skinlesion.cli.options import ParamsOpt, user_errors
from skinlesion.config.files import load_params

app = typer.Typer(
    help="Kubeflow Pipelines: compile and submit the training, tuning, scoring and "
    "monitoring pipelines; schedule training and monitoring.",
    no_args_is_help=True,
)

HostOpt = Annotated[
    str, typer.Option("--host", help="KFP API endpoint, e.g. https://kfp.example/pipeline.")
]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        help="Override a run parameter: data_uri=s3://... or section.key=value of params.yaml "
        "(e.g. train.cnn.epochs=80). Repeatable.",
    ),
]
PackageOpt = Annotated[
    Path | None,
    typer.Option("--package", help="A compiled pipeline YAML (default: compile params.yaml now)."),
]
NamespaceOpt = Annotated[
    str | None, typer.Option(help="Kubeflow profile namespace (multi-user installations).")
]
PipelineOpt = Annotated[
    str,
    typer.Option(
        "--pipeline",
        help="training (validate, train, evaluate, promote), tuning (an Optuna search on "
        "GPU workers, then optionally training with the best), scoring (a registered "
        "model over a batch of images: --param source=s3://...) or monitoring (the serving "
        "log against the champion's reference; retraining on drift if monitor.on_drift).",
    ),
]
ExperimentOpt = Annotated[
    str | None,
    typer.Option(
        help="KFP experiment (default: the pipeline's schedule's, cluster.schedule or "
        "cluster.monitoring_schedule)."
    ),
]


@app.command("compile")
@user_errors
def pipeline_compile(
    out: Annotated[Path, typer.Option("--out", help="Pipeline YAML to write.")],
    cpu_image: Annotated[
        str | None, typer.Option(help="Image of the CPU steps (default: cluster.images.cpu).")
    ] = None,
    gpu_image: Annotated[
        str | None, typer.Option(help="Image of the training steps (default: cluster.images.gpu).")
    ] = None,
    pipeline: PipelineOpt = "training",
    params_file: ParamsOpt = None,
) -> None:
    """Compile a pipeline (defaults from params.yaml and its cluster profile)."""
    from pipelines.client import pipeline_kind

    kind = pipeline_kind(pipeline)
    path = kind.compile(load_params(params_file), out, cpu_image, gpu_image)
    typer.echo(f"pipeline written to {path}")


@app.command("submit")
@user_errors
def pipeline_submit(
    host: HostOpt,
    param: ParamOpt = None,
    package: PackageOpt = None,
    experiment: ExperimentOpt = None,
    run_name: Annotated[str | None, typer.Option(help="Name of the run.")] = None,
    namespace: NamespaceOpt = None,
    cache: Annotated[
        bool | None,
        typer.Option("--cache/--no-cache", help="Override the steps' caching for this run."),
    ] = None,
    pipeline: PipelineOpt = "training",
    params_file: ParamsOpt = None,
) -> None:
    """Start one run of a pipeline on a Kubeflow Pipelines cluster."""
    import tempfile

    from pipelines.client import submit_run

    with tempfile.TemporaryDirectory() as tmp:
        run = submit_run(
            host,
            load_params(params_file),
            param or [],
            Path(tmp),
            package,
            experiment,
            run_name,
            namespace,
            cache,
            pipeline,
        )
    typer.echo(f"run {run.id} submitted: {run.url}")


@app.command("schedule")
@user_errors
def pipeline_schedule(
    host: HostOpt,
    cron: Annotated[
        str | None,
        typer.Option(
            help="Six-field cron (seconds first), e.g. '0 0 3 * * 1' (default: the "
            "pipeline's schedule, cluster.schedule or cluster.monitoring_schedule)."
        ),
    ] = None,
    param: ParamOpt = None,
    package: PackageOpt = None,
    experiment: ExperimentOpt = None,
    name: Annotated[str | None, typer.Option(help="Name of the recurring run.")] = None,
    namespace: NamespaceOpt = None,
    pipeline: PipelineOpt = "training",
    params_file: ParamsOpt = None,
) -> None:
    """Schedule recurring retraining (or monitoring): one run at a time, missed runs not
    caught up; scheduling a name again replaces its recurring run."""
    import tempfile

    from pipelines.client import schedule_run

    with tempfile.TemporaryDirectory() as tmp:
        job = schedule_run(
            host,
            load_params(params_file),
            param or [],
            Path(tmp),
            cron,
            package,
            experiment,
            name,
            namespace,
            pipeline,
        )
    typer.echo(f"recurring run {job.id} created: {job.url}")
    for old in job.replaced:
        typer.echo(f"replaced recurring run {old} of the same name (runs it started go on)")


@app.command("schedules")
@user_errors
def pipeline_schedules(
    host: HostOpt,
    experiment: ExperimentOpt = None,
    namespace: NamespaceOpt = None,
    pipeline: PipelineOpt = "training",
    params_file: ParamsOpt = None,
) -> None:
    """List the recurring runs of the experiment: name, id, cron, enabled, created."""
    from pipelines.client import schedules

    found = schedules(host, load_params(params_file), experiment, namespace, pipeline)
    if not found:
        typer.echo("no recurring runs")
    for s in found:
        state = "enabled" if s.enabled else "disabled"
        typer.echo(f"{s.name}\t{s.id}\t{s.cron}\t{state}\t{s.created_at}")
