"""What the served model's traffic is compared with: the monitoring reference its
training run logged (``monitoring/reference.parquet``: the validation images' patient
fields, decisions, probabilities and pooled features, computed as the server computes
them for its log; :func:`skinlesion.model.reference.monitoring_reference`)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from skinlesion.errors import SkinlesionError
from skinlesion.promotion.registry import ResolvedVersion


class ReferenceError(SkinlesionError, LookupError):
    """The model's reference cannot be found; the message says what to do."""


def load_reference(served: ResolvedVersion) -> pd.DataFrame:
    """The reference table logged with the training run of ``served``."""
    import mlflow

    from skinlesion.model.reference import REFERENCE_DIR, REFERENCE_FILE

    path = f"{REFERENCE_DIR}/{REFERENCE_FILE}"
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=served.run_id, artifact_path=path, dst_path=folder
            )
        except Exception as err:  # MLflow raises several types for a missing artifact
            raise ReferenceError(
                f"{served.uri} (run {served.run_id or 'unknown'}) has no {path}: it was "
                "trained before models logged their monitoring reference. Retrain it, or "
                "give a reference table (--reference)"
            ) from err
        return pd.read_parquet(Path(local))
