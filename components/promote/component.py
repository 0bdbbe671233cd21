"""Step 7: MLflow registry promotion of the better model (champion / challenger)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def promote(
    raw_data: Input[Dataset],
    manifest: Input[Dataset],
    cnn_report: Input[Artifact],
    cnn_evaluation: Input[Artifact],
    resnet152v2_report: Input[Artifact],
    resnet152v2_evaluation: Input[Artifact],
    params: dict,
    decision: Output[Artifact],
):
    """Register both models and move `champion` when the better one wins
    (``skinlesion.promote``). Its inputs are the two models of the study, by name: a
    pipeline's inputs are fixed when it is compiled."""
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from skinlesion.params import from_pipeline
    from skinlesion.promote import promote_from_reports

    params = from_pipeline(params)
    reports = {
        ("train", "cnn"): cnn_report,
        ("eval", "cnn"): cnn_evaluation,
        ("train", "resnet152v2"): resnet152v2_report,
        ("eval", "resnet152v2"): resnet152v2_evaluation,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for (stage, name), artifact in reports.items():
            source, target = Path(artifact.path) / "metrics.json", Path(tmp) / stage / name
            target.mkdir(parents=True)
            if source.is_file():  # a missing one is named by promote_from_reports
                shutil.copy(source, target / "metrics.json")
        record = promote_from_reports(
            Path(manifest.path), Path(raw_data.path), Path(tmp), ["cnn", "resnet152v2"], params
        )
    Path(decision.path).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    decision.metadata.update(record)
