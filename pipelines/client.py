"""Submitting and scheduling the project's pipelines through `kfp.Client`.

A run's arguments start from the compiled defaults (params.yaml with its cluster profile)
and change only what ``--param`` names: ``data_uri=...`` sets the pipeline parameter,
``section.key=value`` one key of the ``params`` (JSON text of the run's params), as
`dvc exp run -S` does.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines import monitoring_pipeline, scoring_pipeline, training_pipeline, tuning_pipeline
from pipelines.schedules import Schedule, list_schedules, upsert
from pipelines.tasks import compile_with_images
from skinlesion.config.files import set_dotted, to_pipeline
from skinlesion.config.params import Params
from skinlesion.config.parse import for_cluster, parse_params
from skinlesion.errors import SkinlesionError


@dataclass(frozen=True)
class PipelineKind:
    """A pipeline of the project: its name, what builds it, and its parameters besides
    ``params`` (as `--param name=value` sets them)."""

    name: str
    build: Callable[..., Any]
    top_level: tuple[str, ...]

    def compile(
        self,
        params: Params,
        out: str | Path,
        cpu_image: str | None = None,
        gpu_image: str | None = None,
    ) -> Path:
        """A YAML package that `kfp.Client` and the KFP UI accept."""
        return compile_with_images(self.build, params, out, cpu_image, gpu_image)


PIPELINES = {
    "training": PipelineKind(
        training_pipeline.PIPELINE_NAME,
        training_pipeline.build_pipeline,
        ("data_uri", "data_version"),
    ),
    "tuning": PipelineKind(
        tuning_pipeline.PIPELINE_NAME,
        tuning_pipeline.build_tuning_pipeline,
        ("data_uri", "data_version", "model_name", "study", "trials", "train_best"),
    ),
    "scoring": PipelineKind(
        scoring_pipeline.PIPELINE_NAME,
        scoring_pipeline.build_scoring_pipeline,
        ("source", "model_uri", "chunk"),
    ),
    "monitoring": PipelineKind(
        monitoring_pipeline.PIPELINE_NAME,
        monitoring_pipeline.build_monitoring_pipeline,
        ("log_uri", "since", "until", "labels_uri", "data_uri", "data_version"),
    ),
}
TOP_LEVEL = PIPELINES["training"].top_level


class PipelineClientError(SkinlesionError, ValueError):
    """A run or schedule request that cannot be sent; the message says why."""


@dataclass(frozen=True)
class Submitted:
    """What the KFP API answered; ``replaced``: the recurring runs of the same name that
    a new schedule replaced."""

    id: str
    url: str
    replaced: tuple[str, ...] = ()


def pipeline_kind(pipeline: str) -> PipelineKind:
    if pipeline not in PIPELINES:
        raise PipelineClientError(f"no pipeline {pipeline!r}; pipelines: {', '.join(PIPELINES)}")
    return PIPELINES[pipeline]


def pipeline_arguments(
    params: Params, assignments: list[str], pipeline: str = "training"
) -> dict[str, Any]:
    """Arguments for a run: only the parameters that ``assignments`` change, validated
    like params.yaml (a misspelt key or a bad value is refused before any request)."""
    arguments: dict[str, Any] = {}
    run_params = for_cluster(params).raw()
    changed = False
    for assignment in assignments:
        key = assignment.split("=", 1)[0].strip()
        if key in pipeline_kind(pipeline).top_level:
            value = assignment.split("=", 1)[1] if "=" in assignment else ""
            typed = yaml.safe_load(value) if key in ("trials", "train_best", "chunk") else value
            arguments[key] = typed
        else:
            run_params = set_dotted(run_params, assignment)
            changed = True
    if changed:
        arguments["params"] = to_pipeline(parse_params(run_params, "--param"))
    return arguments


def check_cron(expression: str) -> str:
    """KFP schedules take six-field cron expressions (seconds first)."""
    fields = expression.split()
    if len(fields) != 6:
        raise PipelineClientError(
            f"cron expression {expression!r} has {len(fields)} fields; KFP needs six "
            "(second minute hour day-of-month month day-of-week), e.g. '0 0 3 * * 1'"
        )
    return expression


def _client(host: str, namespace: str | None) -> Any:
    import kfp

    return kfp.Client(host=host, namespace=namespace or "kubeflow")


def _package(params: Params, package: Path | None, work_dir: Path, pipeline: str) -> Path:
    """A precompiled package, or one compiled now from params.yaml."""
    if package is not None:
        if not package.is_file():
            raise PipelineClientError(f"pipeline package not found: {package}")
        return package
    kind = pipeline_kind(pipeline)
    return kind.compile(params, work_dir / f"{kind.name}.yaml")


def submit_run(
    host: str,
    params: Params,
    assignments: list[str],
    work_dir: Path,
    package: Path | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    namespace: str | None = None,
    enable_caching: bool | None = None,
    pipeline: str = "training",
) -> Submitted:
    """Start one run of ``pipeline``; returns its id and its page in the KFP UI."""
    arguments = pipeline_arguments(params, assignments, pipeline)
    path = _package(params, package, work_dir, pipeline)
    client = _client(host, namespace)
    result = client.create_run_from_pipeline_package(
        str(path),
        arguments=arguments,
        run_name=run_name,
        experiment_name=experiment or _schedule(params, pipeline)["experiment"],
        namespace=namespace,
        enable_caching=enable_caching,
        service_account=_service_account(params),
    )
    return Submitted(result.run_id, f"{host.rstrip('/')}/#/runs/details/{result.run_id}")


def schedule_run(
    host: str,
    params: Params,
    assignments: list[str],
    work_dir: Path,
    cron: str | None = None,
    package: Path | None = None,
    experiment: str | None = None,
    job_name: str | None = None,
    namespace: str | None = None,
    pipeline: str = "training",
) -> Submitted:
    """A recurring run of ``pipeline`` (training on ``cluster.schedule``, monitoring on
    ``cluster.monitoring_schedule``): at most one at a time, and no catch-up of missed
    slots (a paused schedule must not start a burst of GPU trainings when resumed).
    Scheduling a name again replaces the recurring run of that name
    (:mod:`pipelines.schedules`)."""
    schedule = _schedule(params, pipeline)
    expression = check_cron(cron or schedule["cron"])
    arguments = pipeline_arguments(params, assignments, pipeline)
    path = _package(params, package, work_dir, pipeline)
    client = _client(host, namespace)
    found = client.create_experiment(experiment or schedule["experiment"], namespace=namespace)
    name = job_name or f"{pipeline_kind(pipeline).name}-scheduled"
    job, replaced = upsert(
        client,
        found.experiment_id,
        name,
        lambda: client.create_recurring_run(
            experiment_id=found.experiment_id,
            job_name=name,
            cron_expression=expression,
            max_concurrency=1,
            no_catchup=True,
            params=arguments,
            pipeline_package_path=str(path),
            service_account=_service_account(params),
        ),
    )
    return Submitted(
        job.recurring_run_id,
        f"{host.rstrip('/')}/#/recurringrun/details/{job.recurring_run_id}",
        tuple(replaced),
    )


def schedules(
    host: str,
    params: Params,
    experiment: str | None = None,
    namespace: str | None = None,
    pipeline: str = "training",
) -> list[Schedule]:
    """The recurring runs of the experiment (default: the schedule's of ``pipeline``),
    oldest first."""
    client = _client(host, namespace)
    name = experiment or _schedule(params, pipeline)["experiment"]
    try:
        found = client.get_experiment(experiment_name=name, namespace=namespace)
    except ValueError:  # kfp's answer for an experiment that does not exist
        return []
    return list_schedules(client, found.experiment_id)


def _schedule(params: Params, pipeline: str = "training") -> dict[str, Any]:
    """The cron and experiment of ``pipeline``'s schedule: monitoring has its own."""
    cluster = params.cluster
    chosen = cluster.monitoring_schedule if pipeline == "monitoring" else cluster.schedule
    return chosen.model_dump()


def _service_account(params: Params) -> str | None:
    """The Kubernetes identity of the run's pods (None: the namespace's default)."""
    return params.cluster.service_account or None
