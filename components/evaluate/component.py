"""Step 9: evaluation of one model on the lesion-disjoint test part."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def evaluate(
    model_name: str,
    model: Input[Model],
    raw_data: Input[Dataset],
    manifest: Input[Dataset],
    evaluate: str,
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[HTML],
    evaluation: Output[Artifact],
):
    """Evaluate (``skinlesion.evaluation.evaluate``) on the test split: scalar metrics, confusion
    matrix and melanoma ROC for the UI, an HTML report with every plot, and a folder
    (metrics.json + PNGs, and predictions.csv for the comparison) for promotion."""
    from pathlib import Path

    from skinlesion.config.files import from_pipeline
    from skinlesion.evaluation.evaluate import evaluate_model, write_metrics
    from skinlesion.evaluation.plots import write_plots
    from skinlesion.kfp_outputs import (
        MODEL_FILE,
        evaluation_scalars,
        log_classification,
        log_scalars,
        summary_text,
        write_html,
    )

    params = from_pipeline(evaluate=evaluate)
    result = evaluate_model(
        Path(model.path) / MODEL_FILE, Path(raw_data.path), params, Path(manifest.path), "test"
    )
    out = Path(evaluation.path)
    write_metrics(result.metrics, out / "metrics.json")
    result.predictions().to_csv(out / "predictions.csv", index=False)
    plots = write_plots(result.metrics, result.labels, result.probs, out, model_name)
    log_scalars(metrics, evaluation_scalars(result.metrics))
    log_classification(classification, result.metrics, result.labels, result.probs)
    write_html(
        report.path, f"Evaluation of {model_name} (test part)", summary_text(result.metrics), plots
    )
