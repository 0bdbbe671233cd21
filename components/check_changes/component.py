"""Step 2: has anything changed since the champion was trained? If not, the run ends."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def check_changes(
    raw_data: Input[Dataset],
    params: dict,
    kfp_run_id: str,
    training_image: str,
    check: Output[Artifact],
) -> str:
    """Compare data version, params hash, code and the image training would run in
    (``training_image``) with the champion's training (``skinlesion.promotion.changes``). Returns
    ``changed`` or ``unchanged``; the pipeline trains and promotes only on ``changed``."""
    import json
    import logging
    import os
    from pathlib import Path

    import mlflow

    from skinlesion.config.files import from_pipeline
    from skinlesion.promotion.changes import check_for_changes
    from skinlesion.provenance import KFP_RUN_ENV
    from skinlesion.tracking import configure_tracking

    os.environ[KFP_RUN_ENV] = kfp_run_id
    params = from_pipeline(params)
    configure_tracking(params.tracking.experiment)
    result = check_for_changes(
        mlflow.MlflowClient(),
        params.promote.registered_model,
        params,
        Path(raw_data.path),
        training_image,
    )
    logging.getLogger(__name__).warning(result.reason)
    Path(check.path).write_text(json.dumps(result.__dict__, indent=2) + "\n", encoding="utf-8")
    check.metadata.update({"changed": result.changed, "reason": result.reason})
    return "changed" if result.changed else "unchanged"
