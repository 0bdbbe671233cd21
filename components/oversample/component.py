"""Step 4: oversampling of the training part only; val/test rows pass unchanged."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def oversample(
    manifest: Input[Dataset],
    oversample: str,
    training_manifest: Output[Dataset],
    class_counts: Output[Metrics],
):
    """Oversample the training rows (``skinlesion.data.oversample``); re-checks leakage."""
    from skinlesion.config.files import from_pipeline
    from skinlesion.data.oversample import oversample_manifest
    from skinlesion.data.split import read_manifest
    from skinlesion.kfp_outputs import log_scalars

    params = from_pipeline(oversample=oversample)
    result = oversample_manifest(read_manifest(manifest.path), params.oversample)
    result.to_csv(training_manifest.path, index=False)
    counts = result[result["split"] == "train"]["dx"].value_counts().sort_index()
    log_scalars(class_counts, {f"train_rows_{k}": int(v) for k, v in counts.items()})
