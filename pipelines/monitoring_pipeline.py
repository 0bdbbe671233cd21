"""The monitoring pipeline: the serving log judged against the champion's reference, on its
own schedule; with ``monitor.on_drift: retrain`` it runs the training pipeline when it
finds drift.

The training pipeline is a sub-pipeline of this one, compiled in only under ``retrain``:
a report-only monitor cannot start GPU work, and a retraining one starts exactly the
pipeline a scheduled retraining runs (its own change check, gate and promotion), with
the same parameters.
"""

from typing import Any

from kfp import dsl

from components import step_title
from components.monitor.component import monitor
from components.read_params.component import read_params
from pipelines.tasks import secrets, step
from pipelines.training_pipeline import build_pipeline
from skinlesion.config.files import to_pipeline
from skinlesion.config.operations import ClusterSettings
from skinlesion.config.params import Params
from skinlesion.config.parse import for_cluster

PIPELINE_NAME = "skinlesion-monitoring"


def build_monitoring_pipeline(params: Params, cluster: ClusterSettings | None = None) -> Any:
    """The pipeline function; defaults from ``params`` (after the cluster overrides)."""
    cluster = cluster or params.cluster
    run = for_cluster(params)
    training = build_pipeline(params, cluster) if run.monitor.on_drift == "retrain" else None

    @dsl.pipeline(name=PIPELINE_NAME)
    def monitoring_pipeline(
        params: str = to_pipeline(run),
        log_uri: str = run.monitor.log_uri,
        since: str = "",
        until: str = "",
        labels_uri: str = "",
        data_uri: str = cluster.data_uri,
        data_version: str = cluster.data_version,
    ):
        """Watch the served champion: drift of its traffic, and retraining on drift.

        0. Read params: `params` (JSON text) validated as a whole; the monitor gets the
           `monitor` section.
        17. Monitor served traffic: the prediction log at `log_uri` over [`since`, `until`)
            (default: the last `monitor.window_days` days) against the reference logged
            with `monitor.model`'s training: Evidently's tests of the patient fields, the
            decisions, their confidence and the image embeddings; an HTML report, one
            metric per test, the verdict (stable, drift, insufficient); with `labels_uri`,
            the realised accuracy by week.
        With `monitor.on_drift: retrain`, on drift: the training pipeline (steps 0 to 12)
        on `data_uri` / `data_version`, with the same `params`.
        """
        reading = read_params(params=params)
        step(reading, step_title("read_params"), cluster)
        watched = monitor(
            log_uri=log_uri,
            since=since,
            until=until,
            labels_uri=labels_uri,
            monitor=reading.outputs["monitor"],
        )
        step(watched, step_title("monitor"), cluster, kind="evaluate", cache=False)
        secrets(watched, cluster, "mlflow", "s3")
        if training is not None:
            with dsl.If(watched.outputs["Output"] == "drift", name="drift-found"):
                training(params=params, data_uri=data_uri, data_version=data_version)

    return monitoring_pipeline
