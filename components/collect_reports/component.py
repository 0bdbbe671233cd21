"""Step 10 (fan-in): gather each model's training and test reports into the one folder promotion
reads, a model at a time, so the pipeline works for any `train.models` list.

Why a chain of small steps: a compiled pipeline's inputs are fixed, and the KFP v2 fan-in
(``dsl.Collected`` over a ``ParallelFor``) does not run under ``kfp.local``. Why two
components: the local runner cannot leave an optional input artifact unset either, so the
first link (``start_reports``) has no ``earlier`` input and every later one
(``collect_reports``) requires it.
"""

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def start_reports(
    model_name: str,
    report: Input[Artifact],
    evaluation: Input[Artifact],
    reports: Output[Artifact],
):
    """``reports`` = ``train/<model_name>/metrics.json`` and ``eval/<model_name>/metrics.json``,
    the layout of the local ``reports/`` folder (``skinlesion.promotion.reports``)."""
    from pathlib import Path

    from skinlesion.promotion.reports import add_model_reports

    add_model_reports(Path(reports.path), model_name, Path(report.path), Path(evaluation.path))
    reports.metadata["models"] = [model_name]


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def collect_reports(
    model_name: str,
    report: Input[Artifact],
    evaluation: Input[Artifact],
    earlier: Input[Artifact],
    reports: Output[Artifact],
):
    """``reports`` = ``earlier`` (the models gathered so far) plus this model's two
    metrics files (``skinlesion.promotion.reports``)."""
    from pathlib import Path

    from skinlesion.promotion.reports import add_model_reports

    add_model_reports(
        Path(reports.path),
        model_name,
        Path(report.path),
        Path(evaluation.path),
        Path(earlier.path),
    )
    reports.metadata["models"] = [*earlier.metadata.get("models", []), model_name]
