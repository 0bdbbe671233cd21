"""The batch-scoring pipeline: a registered model over a batch of new images.

A clinic's or a study's images arrive under an S3 prefix; this scores them all with the
champion (or any model URI) through the served model's own path and keeps the table of
answers as the run's artifact, with the model and data versions in every row.
"""

from typing import Any

from kfp import dsl

from components import step_title
from components.read_params.component import read_params
from components.score.component import score
from pipelines.tasks import secrets, step
from skinlesion.config.files import to_pipeline
from skinlesion.config.operations import ClusterSettings
from skinlesion.config.params import Params
from skinlesion.config.parse import for_cluster

PIPELINE_NAME = "skinlesion-batch-scoring"
CHUNK = 256


def build_scoring_pipeline(params: Params, cluster: ClusterSettings | None = None) -> Any:
    """The pipeline function; defaults from ``params`` (after the cluster overrides)."""
    cluster = cluster or params.cluster
    run = for_cluster(params)

    @dsl.pipeline(name=PIPELINE_NAME)
    def scoring_pipeline(
        source: str,
        params: str = to_pipeline(run),
        model_uri: str = run.serve.model,
        chunk: int = CHUNK,
    ):
        """Score a batch of images with a registered model.

        0. Read params: `params` (JSON text) validated as a whole; the scoring step gets
           the `tracking` section.
        16. Score a batch: every image under `source` (an s3:// prefix) with `model_uri`
            (default: the champion, pinned to its version when the run starts), into a
            Parquet table: the answer, the prediction set and referral per image, or the
            error of an image the model refuses; images/s in the step's metrics.
        """
        reading = read_params(params=params)
        step(reading, step_title("read_params"), cluster)
        scored = score(
            model_uri=model_uri,
            source=source,
            chunk=chunk,
            tracking=reading.outputs["tracking"],
        )
        step(scored, step_title("score"), cluster, kind="evaluate", retry=True, cache=False)
        secrets(scored, cluster, "mlflow", "s3")

    return scoring_pipeline
