"""What every task of the project's pipelines gets from the ``cluster`` section of
params.yaml: its image, resources (GPUs for training), node placement, Secrets as
environment, caching and retries."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kfp import compiler, dsl, kubernetes

from skinlesion.config.operations import ClusterSettings, Resources
from skinlesion.config.params import Params


def resources(task: dsl.PipelineTask, spec: Resources) -> None:
    """Requests equal to limits, so a task's pod gets what it asked for."""
    task.set_cpu_request(spec.cpu).set_cpu_limit(spec.cpu)
    task.set_memory_request(spec.memory).set_memory_limit(spec.memory)
    if spec.gpus:
        task.set_accelerator_type(spec.accelerator or "nvidia.com/gpu")
        task.set_accelerator_limit(spec.gpus)


def secrets(task: dsl.PipelineTask, cluster: ClusterSettings, *names: str) -> None:
    for name in names:
        secret = cluster.secrets[name]
        kubernetes.use_secret_as_env(
            task, secret_name=secret.name, secret_key_to_env={k: k for k in secret.keys}
        )


def step(
    task: dsl.PipelineTask,
    display_name: str,
    cluster: ClusterSettings,
    kind: str = "default",
    retry: bool = False,
    cache: bool = True,
) -> dsl.PipelineTask:
    """Settings every task gets: a display name, its image, resources, caching, retries."""
    task.set_display_name(display_name)
    task.set_container_image(cluster.images["gpu" if kind == "train" else "cpu"])
    resources(task, cluster.resources.get(kind, cluster.resources["default"]))
    task.set_caching_options(cache)
    if retry and cluster.retries:
        task.set_retry(cluster.retries, backoff_duration="60s", backoff_factor=2.0)
    return task


def on_gpu_nodes(task: dsl.PipelineTask, cluster: ClusterSettings) -> None:
    for toleration in cluster.tolerations:
        kubernetes.add_toleration(task, **toleration)
    for key, value in cluster.gpu_node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)


def compile_with_images(
    builder: Callable[[Params, ClusterSettings], Any],
    params: Params,
    out: str | Path,
    cpu_image: str | None = None,
    gpu_image: str | None = None,
) -> Path:
    """Compile the pipeline that ``builder`` makes to a YAML package, with the images of
    ``cluster.images`` unless others are given (`make images` passes what it pushed)."""
    images = {
        **params.cluster.images,
        **{k: v for k, v in (("cpu", cpu_image), ("gpu", gpu_image)) if v},
    }
    cluster = params.cluster.model_copy(update={"images": images})
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(builder(params, cluster), str(path))
    return path
