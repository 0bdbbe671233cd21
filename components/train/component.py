"""Step 7: training of one model (GPU when the task has one), tracked in MLflow."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def train(
    model_name: str,
    raw_data: Input[Dataset],
    training_manifest: Input[Dataset],
    data: str,
    validate: str,
    input: str,
    tracking: str,
    train: str,
    params_hash: str,
    kfp_run_id: str,
    image: str,
    model: Output[Model],
    report: Output[Artifact],
    curves: Output[HTML],
    metrics: Output[Metrics],
):
    """Train ``model_name`` (``skinlesion.training.lifecycle``). ``model`` is a folder holding
    ``model.keras``; ``report`` holds metrics.json, history.csv and curves.png.
    ``kfp_run_id`` tags the MLflow run and names the S3 checkpoints, so that a retry of
    this task in the same pipeline run resumes where the last attempt stopped; ``image``
    (the image this task runs in) tags the run too."""
    import json
    from pathlib import Path

    from skinlesion.config.files import from_pipeline
    from skinlesion.kfp_outputs import MODEL_FILE, log_scalars, write_html
    from skinlesion.provenance import RunOrigin
    from skinlesion.training.lifecycle import train_model

    params = from_pipeline(
        data=data, validate=validate, input=input, tracking=tracking, train=train
    )
    report_dir = Path(report.path)
    result = train_model(
        model_name,
        Path(training_manifest.path),
        Path(raw_data.path),
        Path(model.path) / MODEL_FILE,
        report_dir,
        params,
        origin=RunOrigin(kfp_run_id, image, params_hash),
    )
    model.metadata.update(
        {"framework": "keras", "model": model_name, "mlflow_model_uri": result.model_uri}
    )
    log_scalars(metrics, result.__dict__)
    write_html(
        curves.path,
        f"Training of {model_name}",
        json.dumps(result.__dict__, indent=2),
        report_dir.glob("*.png"),
    )
