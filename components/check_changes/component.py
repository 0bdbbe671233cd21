"""Step 5: has anything changed since the champion was trained? If not, the run ends."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def check_changes(
    raw_data: Input[Dataset],
    data: str,
    tracking: str,
    promote: str,
    params_hash: str,
    kfp_run_id: str,
    training_image: str,
    check: Output[Artifact],
) -> str:
    """Compare data version, params hash, code and the image training would run in
    (``training_image``) with the champion's training (``skinlesion.promotion.changes``). Returns
    ``changed`` or ``unchanged``; the pipeline trains and promotes only on ``changed``."""
    import logging
    from pathlib import Path

    from skinlesion.config.files import from_pipeline
    from skinlesion.promotion.changes import run_change_check
    from skinlesion.provenance import RunOrigin

    result = run_change_check(
        from_pipeline(data=data, tracking=tracking, promote=promote),
        Path(raw_data.path),
        Path(check.path),
        RunOrigin(kfp_run_id, training_image, params_hash),
    )
    logging.getLogger(__name__).warning(result.reason)
    check.metadata.update({"changed": result.changed, "reason": result.reason})
    return "changed" if result.changed else "unchanged"
