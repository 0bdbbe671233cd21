"""Step 11: the trained models compared on the same test lesions."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Metrics, Output

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def compare(
    reports: Input[Artifact],
    train: str,
    compare: str,
    tracking: str,
    metrics: Output[Metrics],
    table: Output[Markdown],
    comparison: Output[Artifact],
):
    """Compare every pair of ``train.models`` on their test predictions, gathered in
    ``reports`` (``skinlesion.evaluation.compare``): the paired differences as scalar
    metrics, the Markdown tables for the UI, and a folder (comparison.json, .md, .png)
    also logged to MLflow."""
    from pathlib import Path

    from skinlesion.config.files import from_pipeline
    from skinlesion.evaluation.compare import read_predictions, run_comparison
    from skinlesion.kfp_outputs import log_scalars

    params = from_pipeline(train=train, compare=compare, tracking=tracking)
    out = Path(comparison.path)
    report = run_comparison(
        read_predictions(Path(reports.path) / "eval", params.train.candidates),
        out,
        params.compare,
        params.tracking.experiment,
    )
    log_scalars(
        metrics,
        {
            f"{p['first']}-{p['second']} {m}": figure["value"]
            for p in report["pairs"]
            for m, figure in p["difference"].items()
        },
    )
    Path(table.path).write_text((out / "comparison.md").read_text())
