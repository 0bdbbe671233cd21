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
from skinlesion.inference import predict_raw
from skinlesion.inputs import labels_of, read_images
from skinlesion.metadata import encode_metadata, image_size
from skinlesion.metrics import compute_metrics
from skinlesion.settings import EvalSettings, Params, as_params

log = logging.getLogger(__name__)


class ModelLoadError(SkinlesionError, RuntimeError):
    """The model reference does not resolve to a loadable Keras model."""


class ModelFormatError(ModelLoadError):
    """The model's files were fetched, but this code cannot read them (an incompatible
    older format, a corrupt file). Only this error may be read as "unloadable model": a
    registry, network or storage failure is a plain :class:`ModelLoadError`."""


def load_model(reference: str | Path) -> Any:
    """A ``.keras`` file, or an MLflow model URI (``models:/name@champion``, ``runs:/...``),
    as a Keras model that takes raw images (skinlesion.preprocessing).

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
    """Deserialise a model already on disk: an MLflow model folder or a ``.keras`` file.

    A model logged before models carried their preprocessing takes resized tensors; from
    MLflow it is given the preprocessing its training run used (``input.center_crop``);
    a bare file of that kind is refused, because nothing says how it was trained."""
    import keras

    from skinlesion.preprocessing import preprocessing_of, register, with_preprocessing
    from skinlesion.serving_model import keras_file_of

    register()
    try:
        if Path(local).is_dir():
            keras_file = keras_file_of(local)
            if keras_file is None:  # the Keras flavour of earlier versions
                import mlflow.keras

                legacy = mlflow.keras.load_model(local)
                return with_preprocessing(legacy, image_size(legacy), _run_crop(ref, local))
            local = str(keras_file)
        model = keras.models.load_model(local)
    except ModelLoadError:
        raise
    except Exception as err:  # Keras raises many types for files it cannot read
        raise ModelFormatError(f"cannot load model {ref}: {type(err).__name__}: {err}") from err
    if preprocessing_of(model) is None:
        raise ModelFormatError(
            f"{ref} was saved before models carried their own preprocessing, so it is not "
            "known how its images were cropped; train it again (`dvc repro`) or load it "
            "from the MLflow run that logged it"
        )
    return model


def _run_crop(ref: str, local: str) -> bool:
    """``input.center_crop`` of the run that logged an MLflow model folder."""
    import mlflow
    from mlflow.models import Model

    run_id = Model.load(local).run_id
    try:
        value = mlflow.MlflowClient().get_run(run_id).data.params["input.center_crop"]
    except Exception as err:  # a missing run or param; MLflow raises several types
        raise ModelFormatError(
            f"{ref} predates models that carry their preprocessing and its run "
            f"({run_id}) does not say how images were cropped; register a model trained "
            "by this version (the training pipeline or `dvc repro`, then promote)"
        ) from err
    log.warning("%s predates self-contained models: crop from its run (%s)", ref, value)
    return value.strip().lower() == "true"


def predict_frame(
    model: Any, frame: pd.DataFrame, data_dir: str | Path, settings: EvalSettings
) -> np.ndarray:
    """Class probabilities of ``model`` for every row of ``frame``: each image read from
    disk as it is and prepared by the model itself."""
    if frame.empty:
        raise ValueError("nothing to evaluate: no rows")
    images = read_images(data_dir, frame)
    return predict_raw(model, images, encode_metadata(frame), settings.batch_size, settings.tta)


def evaluate_frame(
    model: Any, frame: pd.DataFrame, data_dir: str | Path, settings: EvalSettings
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of ``model`` on every row of ``frame``; also returns the probabilities."""
    probs = predict_frame(model, frame, data_dir, settings)
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
    metrics, probs = evaluate_frame(model, frame, root, settings)
    metrics["model"] = str(reference)
    return Evaluation(metrics, labels_of(frame), probs)


class EvaluationError(SkinlesionError, ValueError):
    """There is nothing (valid) to evaluate."""
