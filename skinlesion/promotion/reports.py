"""The reports folder that promotion and the comparison read: ``train/<model>/metrics.json``
(validation figures, MLflow run), ``eval/<model>/metrics.json`` (test figures) and
``eval/<model>/predictions.csv`` (test probabilities) per model. DVC's stages write it in
place; a Kubeflow run gathers it from each model's artifacts."""

from __future__ import annotations

import shutil
from pathlib import Path

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"


def report_files(reports_dir: Path, model: str) -> tuple[Path, Path]:
    """Where a model's training and test metrics sit in ``reports_dir``."""
    return (
        reports_dir / "train" / model / METRICS_FILE,
        reports_dir / "eval" / model / METRICS_FILE,
    )


def add_model_reports(
    out: Path, model: str, train_report: Path, evaluation: Path, earlier: Path | None = None
) -> Path:
    """``out`` holds ``earlier``'s models plus ``model``'s two metrics files and its test
    predictions, copied from its training report and evaluation folders. A missing file is
    left missing, so that promotion or the comparison names it."""
    if earlier is not None:
        shutil.copytree(earlier, out, dirs_exist_ok=True)
    train_metrics, eval_metrics = report_files(out, model)
    for source, target in (
        (train_report / METRICS_FILE, train_metrics),
        (evaluation / METRICS_FILE, eval_metrics),
        (evaluation / PREDICTIONS_FILE, eval_metrics.with_name(PREDICTIONS_FILE)),
    ):
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_file():
            shutil.copy(source, target)
    return out
