"""Step 16: batch scoring of a folder of images by a registered model."""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def score(
    model_uri: str,
    source: str,
    chunk: int,
    tracking: str,
    predictions: Output[Dataset],
    summary: Output[Metrics],
):
    """Score every image under ``source`` (an s3:// prefix, or a folder on a mounted
    volume) with ``model_uri`` (an alias is pinned to its version first), through the
    served model's own path (``skinlesion.serving.batch``): one Parquet row per image
    with the answer, the prediction set and referral, and the model and data versions."""
    from pathlib import Path

    from skinlesion.config.files import from_pipeline
    from skinlesion.serving.batch import score as score_images
    from skinlesion.tracking import configure_tracking

    params = from_pipeline(tracking=tracking)
    configure_tracking(params.tracking.experiment)
    result = score_images(model_uri, source, Path(predictions.path), chunk)
    predictions.metadata.update(
        {
            "model_uri": result.model_uri,
            "model_version": result.model_version,
            "data_version": result.data_version,
            "images": result.images,
        }
    )
    for key in ("images", "errors", "referred"):
        summary.log_metric(key, getattr(result, key))
    summary.log_metric("images_per_s", round(result.images_per_s, 2))
