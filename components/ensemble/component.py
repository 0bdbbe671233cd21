"""Step 8: an ensemble candidate built from trained members (no retraining), tracked in
MLflow like a training run."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def ensemble(
    model_name: str,
    raw_data: Input[Dataset],
    training_manifest: Input[Dataset],
    reports: Input[Artifact],
    data: str,
    validate: str,
    tracking: str,
    train: str,
    params_hash: str,
    kfp_run_id: str,
    image: str,
    model: Output[Model],
    report: Output[Artifact],
    summary: Output[HTML],
    metrics: Output[Metrics],
):
    """Build ensemble ``model_name`` of ``train.ensembles`` (``skinlesion.training.ensemble``)
    from its members as their training runs logged them (the ``model_uri`` of each
    member's report in the gathered ``reports``). ``model`` is a folder holding
    ``model.keras``; ``report`` holds its metrics.json, as a training step's does."""
    import json
    from pathlib import Path

    from skinlesion.config.files import from_pipeline
    from skinlesion.kfp_outputs import MODEL_FILE, log_scalars, write_html
    from skinlesion.promotion.reports import report_files
    from skinlesion.provenance import RunOrigin
    from skinlesion.training.ensemble import build_ensemble_candidate

    params = from_pipeline(data=data, validate=validate, tracking=tracking, train=train)
    members = {
        name: json.loads(report_files(Path(reports.path), name)[0].read_text())["model_uri"]
        for name in params.train.ensembles[model_name].members
    }
    result = build_ensemble_candidate(
        model_name,
        members,
        Path(training_manifest.path),
        Path(raw_data.path),
        Path(model.path) / MODEL_FILE,
        Path(report.path),
        params,
        origin=RunOrigin(kfp_run_id, image, params_hash),
    )
    model.metadata.update(
        {"framework": "keras", "model": model_name, "mlflow_model_uri": result.model_uri}
    )
    log_scalars(metrics, result.__dict__)
    write_html(summary.path, f"Ensemble {model_name}", json.dumps(result.__dict__, indent=2), [])
