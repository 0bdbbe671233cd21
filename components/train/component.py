"""Step 5: training of one model (GPU when the task has one), tracked in MLflow."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def train(
    model_name: str,
    raw_data: Input[Dataset],
    training_manifest: Input[Dataset],
    params: dict,
    model: Output[Model],
    report: Output[Artifact],
    curves: Output[HTML],
    metrics: Output[Metrics],
):
    """Train ``model_name`` (``skinlesion.train``). ``model`` is a folder holding
    ``model.keras``; ``report`` holds metrics.json, history.csv and curves.png."""
    import json
    from pathlib import Path

    from skinlesion.kfp_outputs import MODEL_FILE, log_scalars, write_html
    from skinlesion.params import from_pipeline
    from skinlesion.train import train_model

    params = from_pipeline(params)
    report_dir = Path(report.path)
    result = train_model(
        model_name,
        Path(training_manifest.path),
        Path(raw_data.path),
        Path(model.path) / MODEL_FILE,
        report_dir,
        params,
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
