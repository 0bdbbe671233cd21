"""The reference a trained model carries for drift monitoring: its answers on labelled
images it did not learn from, logged beside it as ``monitoring/reference.parquet``.

Why in the model concern: training builds it (:mod:`skinlesion.training.lifecycle`,
:mod:`skinlesion.training.ensemble`), the drift monitor reads it
(:mod:`skinlesion.monitoring.reference`), and its columns are those the server logs for
each answer (:mod:`skinlesion.serving.prediction_log`); a module both sides import keeps
the format in one place and the imports one way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from skinlesion.labels import CLASSES

REFERENCE_DIR = "monitoring"
REFERENCE_FILE = "reference.parquet"


def log_monitoring_reference(table: pd.DataFrame) -> None:
    """Log :func:`monitoring_reference`'s table to the active MLflow run, where the drift
    monitor of a served version looks for it."""
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / REFERENCE_FILE
        table.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), REFERENCE_DIR)


def monitoring_reference(
    val_rows: pd.DataFrame, features: np.ndarray, probs: np.ndarray
) -> pd.DataFrame:
    """What a drift monitor compares served traffic with, logged beside the model: the
    validation images (lesions the model did not learn from, as traffic will be) with
    their patient fields, true class, the model's probabilities, decision and confidence,
    and their pooled features at float16 precision, as the server logs them."""
    table = val_rows[["image_id", "dx", "age", "sex", "localization"]].reset_index(drop=True)
    table[list(CLASSES)] = probs
    table["prediction"] = [CLASSES[i] for i in probs.argmax(axis=1)]
    table["confidence"] = probs.max(axis=1)
    table["embedding"] = [row.astype("float16").astype("float64").tolist() for row in features]
    return table
