"""Stage 6: evaluation on lesion-disjoint data, with what a clinician needs to read.

This module does the I/O: loads a model (a file or an MLflow URI), decodes the images of
one split, predicts and writes the report. The figures themselves are computed in
:mod:`skinlesion.metrics` and drawn in :mod:`skinlesion.evaluation_plots`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skinlesion.errors import SkinlesionError
from skinlesion.inputs import decode_images, labels_of
from skinlesion.metadata import image_size, model_inputs
from skinlesion.metrics import compute_metrics
from skinlesion.settings import EvalSettings, InputSettings, Params, as_params

log = logging.getLogger(__name__)


class ModelLoadError(SkinlesionError, RuntimeError):
    """The model reference does not resolve to a loadable Keras model."""


class ModelFormatError(ModelLoadError):
    """The model's files were fetched, but this code cannot read them (an incompatible
    older format, a corrupt file). Only this error may be read as "unloadable model": a
    registry, network or storage failure is a plain :class:`ModelLoadError`."""


def load_model(reference: str | Path) -> Any:
    """A ``.keras`` file, or an MLflow model URI (``models:/name@champion``, ``runs:/...``).

    The files are fetched first and read second, so that a failure to reach the registry
    or its storage (:class:`ModelLoadError`) is never mistaken for a model this code
    cannot read (:class:`ModelFormatError`)."""
    ref = str(reference)
    if "://" in ref or ref.startswith("models:/") or ref.startswith("runs:/"):
        import mlflow.artifacts

        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=ref)
        except Exception as err:  # MLflow, HTTP and storage clients raise many types
            raise ModelLoadError(f"cannot load model {ref}: {type(err).__name__}: {err}") from err
        return _read_model(ref, local)
    path = Path(ref)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    return _read_model(ref, str(path))


def _read_model(ref: str, local: str) -> Any:
    """Deserialise a model already on disk: an MLflow model folder or a ``.keras`` file."""
    import keras

    try:
        if Path(local).is_dir():
            import mlflow.keras

            return mlflow.keras.load_model(local)
        return keras.models.load_model(local)
    except Exception as err:  # Keras raises many types for files it cannot read
        raise ModelFormatError(f"cannot load model {ref}: {type(err).__name__}: {err}") from err


def predict_proba(
    model: Any,
    images: np.ndarray,
    batch_size: int,
    tta: bool,
    metadata: np.ndarray | None = None,
) -> np.ndarray:
    """Class probabilities; with ``tta`` the mean over the identity and three flips.
    ``metadata`` (encoded, one row per image) goes to a model that takes it; None means
    unknown."""
    x = images.astype("float32")
    views = [x]
    if tta:
        views += [x[:, :, ::-1], x[:, ::-1, :], x[:, ::-1, ::-1]]
    probs = [
        model.predict(model_inputs(model, v, metadata), batch_size=batch_size, verbose=0)
        for v in views
    ]
    return np.mean(probs, axis=0).astype("float64")


def predict_frame(
    model: Any,
    frame: pd.DataFrame,
    data_dir: str | Path,
    inputs: InputSettings,
    settings: EvalSettings,
) -> np.ndarray:
    """Class probabilities of ``model`` for every row of ``frame``, at the model's own
    input size (the other input settings, centre crop included, stay as given)."""
    if frame.empty:
        raise ValueError("nothing to evaluate: no rows")
    size = image_size(model)
    if size != inputs.image_size:
        log.info("model expects %dx%d images; resizing to that", size, size)
        inputs = inputs.model_copy(update={"image_size": size})
    table = decode_images(data_dir, frame, inputs)
    rows = table.rows(frame["image_id"])
    return predict_proba(
        model, table.images[rows], settings.batch_size, settings.tta, table.metadata[rows]
    )


def evaluate_frame(
    model: Any,
    frame: pd.DataFrame,
    data_dir: str | Path,
    inputs: InputSettings,
    settings: EvalSettings,
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of ``model`` on every row of ``frame``; also returns the probabilities."""
    probs = predict_frame(model, frame, data_dir, inputs, settings)
    return compute_metrics(labels_of(frame), probs, frame.reset_index(drop=True), settings), probs


def write_metrics(metrics: dict[str, Any], out: str | Path) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return path


@dataclass
class Evaluation:
    """One model evaluated on one set of images: metrics plus what the plots need."""

    metrics: dict[str, Any]
    labels: np.ndarray
    probs: np.ndarray


def evaluate_model(
    reference: str | Path,
    data_dir: str | Path,
    params: Params | dict[str, Any],
    manifest: str | Path | None = None,
    split_name: str = "test",
    tta: bool | None = None,
) -> Evaluation:
    """The evaluation step: load the model (failing before any data is read), take one
    split of ``manifest`` (or every image of ``data_dir``) and compute every metric."""
    from skinlesion.dataset import load_catalog
    from skinlesion.split import read_manifest

    params = as_params(params)
    settings = params.evaluate
    if tta is not None:
        settings = settings.model_copy(update={"tta": tta})
    model = load_model(reference)
    root = Path(data_dir)
    if manifest is not None:
        frame = read_manifest(manifest)
        frame = frame[frame["split"] == split_name].drop_duplicates("image_id")
    else:
        frame = load_catalog(root)
        missing = frame["image_path"].isna()
        if missing.any():
            raise EvaluationError(
                f"{int(missing.sum())} image(s) of the metadata are missing in {root}; "
                "run `skinlesion validate` first"
            )
    if frame.empty:
        raise EvaluationError(f"nothing to evaluate: no '{split_name}' rows in {manifest}")
    metrics, probs = evaluate_frame(model, frame, root, params.input, settings)
    metrics["model"] = str(reference)
    return Evaluation(metrics, labels_of(frame), probs)


class EvaluationError(SkinlesionError, ValueError):
    """There is nothing (valid) to evaluate."""
