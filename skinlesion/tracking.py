"""MLflow tracking with embedded defaults, and the provenance tags every run carries.

Without ``MLFLOW_TRACKING_URI`` runs go to a local sqlite store (``mlflow.db``) with
artifacts under ``mlruns/`` (MLflow's default beside it): no server needed. With it (the
cluster), the same code talks to the MLflow server, which proxies artifacts to S3.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from skinlesion.errors import SkinlesionError

LOCAL_DB = "mlflow.db"


class TrackingUnreachable(SkinlesionError, ConnectionError):
    """The MLflow server (or store) could not be read; this step changed nothing in it."""


def configure_tracking(experiment: str, root: str | Path = ".") -> str:
    """Point MLflow at $MLFLOW_TRACKING_URI or the local sqlite store; make sure the
    experiment exists. Returns the experiment id.

    A server that cannot be reached ends the step here with one line that names it,
    before anything is read or written: no traceback, and the registry as it was."""
    import mlflow

    base = Path(root).resolve()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{base / LOCAL_DB}"
    mlflow.set_tracking_uri(uri)
    try:
        found = mlflow.get_experiment_by_name(experiment)
        if found is not None:
            mlflow.set_experiment(experiment_id=found.experiment_id)
            return found.experiment_id
        experiment_id = mlflow.create_experiment(experiment)
    except Exception as err:  # HTTP, database and MLflow errors alike
        first = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise TrackingUnreachable(
            f"MLflow at {uri} cannot be reached ({type(err).__name__}: {first}); nothing "
            "was read or written and the registry is unchanged"
        ) from err
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """Nested params as MLflow-style dotted keys."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), sub))
        return out
    return {prefix: value}
