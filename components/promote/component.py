"""Step 12: MLflow registry promotion (`challenger` / `champion` aliases)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def promote(
    raw_data: Input[Dataset],
    manifest: Input[Dataset],
    reports: Input[Artifact],
    train: str,
    evaluate: str,
    promote: str,
    tracking: str,
    decision: Output[Artifact],
):
    """Register every model of ``train.models`` and move `champion` when the one best on
    validation wins the gate (``skinlesion.promotion.promote``). ``reports`` is the folder that
    collect_reports gathered, laid out like the local ``reports/``."""
    import json
    from pathlib import Path

    from skinlesion.config.files import from_pipeline
    from skinlesion.promotion.promote import promote_from_reports

    params = from_pipeline(train=train, evaluate=evaluate, promote=promote, tracking=tracking)
    record = promote_from_reports(
        Path(manifest.path),
        Path(raw_data.path),
        Path(reports.path),
        params.train.candidates,
        params,
    )
    Path(decision.path).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    decision.metadata.update(record)
