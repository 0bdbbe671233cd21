"""Step 3: lesion-grouped, stratified train/val/test split with the leakage check."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def split(
    raw_data: Input[Dataset],
    data: str,
    split: str,
    manifest: Output[Dataset],
    summary: Output[Metrics],
):
    """Write the split manifest (``skinlesion.data.split``); leakage raises and fails the task."""
    from pathlib import Path

    from skinlesion.config.files import from_pipeline
    from skinlesion.data.split import split_dataset, split_summary, write_manifest
    from skinlesion.kfp_outputs import log_scalars

    params = from_pipeline(data=data, split=split)
    frame = split_dataset(Path(raw_data.path), params.split, params.data.workers)
    write_manifest(frame, manifest.path, None)
    counts = split_summary(frame)
    log_scalars(
        summary,
        {f"{name}.{k}": v[k] for name, v in counts.items() for k in ("images", "lesions")},
    )
