"""Loading a model, whatever form it was kept in: a ``.keras`` file, an MLflow model
folder of the servable form, or a version registered in the earlier Keras flavour (given
the crop its training run used).

Why a module of its own: evaluation, prediction, the gate, candidates and the upgrade of
old versions all load models, and must tell "the registry could not be reached"
(:class:`ModelLoadError`) from "this code cannot read that model" (:class:`ModelFormatError`)
the same way; the gate keeps an unreadable champion only on the second.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from skinlesion.errors import SkinlesionError
from skinlesion.model.metadata import image_size

log = logging.getLogger(__name__)

FETCH_PREFIX = "skinlesion-model-"  # the temporary folders models are fetched into


class ModelLoadError(SkinlesionError, RuntimeError):
    """The model reference does not resolve to a loadable Keras model."""


class ModelFormatError(ModelLoadError):
    """The model's files were fetched, but this code cannot read them (an incompatible
    older format, a corrupt file). Only this error may be read as "unloadable model": a
    registry, network or storage failure is a plain :class:`ModelLoadError`."""


def load_model(reference: str | Path) -> Any:
    """A ``.keras`` file, or an MLflow model URI (``models:/name@champion``, ``runs:/...``),
    as a Keras model that takes raw images (skinlesion.model.preprocessing).

    The files are fetched first and read second, so that a failure to reach the registry
    or its storage (:class:`ModelLoadError`) is never mistaken for a model this code
    cannot read (:class:`ModelFormatError`)."""
    ref = str(reference)
    if "://" in ref or ref.startswith("models:/") or ref.startswith("runs:/"):
        import mlflow.artifacts

        with tempfile.TemporaryDirectory(prefix=FETCH_PREFIX) as folder:
            try:
                local = mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=folder)
            except Exception as err:  # MLflow, HTTP and storage clients raise many types
                raise ModelLoadError(
                    f"cannot load model {ref}: {type(err).__name__}: {err}"
                ) from err
            return _read_model(ref, local)
    path = Path(ref)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    return _read_model(ref, str(path))


def load_pyfunc(uri: str) -> Any:
    """The MLflow pyfunc at ``uri``, its files fetched into a folder removed once it is in
    memory.

    Why not ``mlflow.pyfunc.load_model(uri)`` alone: MLflow then downloads into a temporary
    folder that nobody deletes, a few hundred MB per load; a server that reloads, a batch
    job run nightly and the test suite filled this machine's disk that way."""
    import mlflow.pyfunc

    with tempfile.TemporaryDirectory(prefix=FETCH_PREFIX) as folder:
        return mlflow.pyfunc.load_model(uri, dst_path=folder)


def _read_model(ref: str, local: str) -> Any:
    """Deserialise a model already on disk: an MLflow model folder or a ``.keras`` file.

    A model logged before models carried their preprocessing takes resized tensors; from
    MLflow it is given the preprocessing its training run used (``input.center_crop``);
    a bare file of that kind is refused, because nothing says how it was trained."""
    import keras

    from skinlesion.model.ensemble import is_ensemble
    from skinlesion.model.layers import register_layers
    from skinlesion.model.preprocessing import preprocessing_of, with_preprocessing
    from skinlesion.model.servable import keras_file_of

    register_layers()
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
    if preprocessing_of(model) is None and not is_ensemble(model):
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
