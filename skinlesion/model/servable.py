"""The MLflow model that training logs and promotion registers: what a request meets.

A ``python_function`` model around the saved Keras model (which carries its own
preprocessing, skinlesion.model.preprocessing). One request row is one image, base64-encoded
JPEG or PNG bytes in ``image``, with the patient's ``age`` (years), ``sex`` and
``localization`` (body site) when known. It answers with the class probabilities and
``prediction``, the decision at the model's melanoma operating point (folded into the
softmax bias at training, so it is the most probable class), and with how far to trust
it (:mod:`skinlesion.model.reliability`): ``prediction_set``, every class the model cannot
rule out at its conformal level, ``refer`` and ``refer_reason``. Requests that are not
images or carry values outside HAM10000's vocabulary are refused with a message that
names the row and the field: MLflow's scoring server turns that into a 400. So is an
image that breaks the input contract of the training data (too small, not RGB), unless
the model was trained with ``train.reliability.invalid_input: refer``; then it is
answered with ``refer: true`` and the rule as its reason.

The model needs the skinlesion package where it is loaded (the step image has it).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from skinlesion.data.contract import InputContract
from skinlesion.labels import CLASSES
from skinlesion.model.metadata import KNOWN_SEXES, KNOWN_SITES
from skinlesion.model.reliability import Assessment, Reliability

KERAS_ARTIFACT = "keras_model"
# Inference parameter: also answer each image's pooled features (float16 precision), for
# the server's prediction log (skinlesion.serving.server); clients leave it off.
EMBEDDING_PARAM = "embedding"
EMBEDDING_COLUMN = "embedding"
KERAS_FILE = "model.keras"
BATCH_SIZE = 32


class RequestError(ValueError):
    """A request row the model cannot answer; the message says which and why."""


def _text(value: Any) -> str | None:
    """A stripped, lower-case string, or None for a missing value."""
    if value is None or (not isinstance(value, str | bytes) and pd.isna(value)):
        return None
    text = str(value).strip().lower()
    return text or None


Decoder = Callable[[bytes], np.ndarray]


def _image(
    row: int, value: Any, reliability: Reliability | None, decode: Decoder | None
) -> tuple[np.ndarray, list[str]]:
    """The decoded image of one row and the contract rules it breaks, screened by the
    model's ``reliability`` (none without one)."""
    from skinlesion.model.preprocessing import ImageDecodeError, read_image
    from skinlesion.model.reliability import InputContractError

    if not isinstance(value, str | bytes) or not value:
        raise RequestError(f"row {row}: 'image' must be a base64-encoded JPEG or PNG")
    try:
        raw = value if isinstance(value, bytes) else base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(f"row {row}: 'image' is not valid base64 ({err})") from err
    try:
        broken = reliability.screen(raw) if reliability is not None else []
    except InputContractError as err:
        raise RequestError(f"row {row}: {err}") from err
    try:
        return (decode or read_image)(raw), broken
    except ImageDecodeError as err:
        raise RequestError(f"row {row}: 'image' is {err}") from err


def parse_request(
    frame: pd.DataFrame, reliability: Reliability | None = None, decode: Decoder | None = None
) -> tuple[list[np.ndarray], pd.DataFrame, list[list[str]]]:
    """The images and the patient fields of a request, checked row by row, and the input
    contract rules each image breaks (:meth:`Reliability.screen`: a request is refused on
    the first image that breaks one, unless the model refers such images)."""
    if "image" not in frame.columns:
        raise RequestError("the request has no 'image' column")
    if frame.empty:
        raise RequestError("the request has no rows")
    decoded = [_image(i, v, reliability, decode) for i, v in enumerate(frame["image"])]
    images = [image for image, _ in decoded]
    violations = [broken for _, broken in decoded]
    patient = pd.DataFrame(index=range(len(frame)))
    columns = {"sex": KNOWN_SEXES, "localization": KNOWN_SITES}
    for column, vocabulary in columns.items():
        values = [_text(v) for v in frame.get(column, [None] * len(frame))]
        for row, value in enumerate(values):
            if value is not None and value != "unknown" and value not in vocabulary:
                raise RequestError(
                    f"row {row}: {column} {value!r} is not one of: {', '.join(vocabulary)}"
                )
        patient[column] = values
    raw_ages = list(frame.get("age", [None] * len(frame)))
    ages = pd.to_numeric(pd.Series(raw_ages), errors="coerce")
    contract = reliability.contract if reliability is not None else InputContract(1, 1)
    for row, (age, raw) in enumerate(zip(ages, raw_ages, strict=True)):
        why = contract.age_violation(age) if _text(raw) is not None else None
        if why is not None:
            raise RequestError(f"row {row}: {why} (got {raw!r})")
    patient["age"] = ages.to_numpy()
    return images, patient, violations


def answer(probs: np.ndarray, assessment: Assessment | None = None) -> pd.DataFrame:
    """One row per image: ``prediction``, one probability column per class and, for a
    model that carries them, ``prediction_set`` (a list of classes), ``refer`` and
    ``refer_reason``."""
    table = pd.DataFrame(probs.astype("float64"), columns=list(CLASSES))
    table.insert(0, "prediction", [CLASSES[i] for i in probs.argmax(axis=1)])
    if assessment is not None:
        table.insert(1, "prediction_set", [assessment.prediction_set(i) for i in range(len(table))])
        table.insert(2, "refer", assessment.refer.tolist())
        table.insert(3, "refer_reason", assessment.reasons)
    return table


class LesionClassifier(mlflow.pyfunc.PythonModel):
    """The registered model: request rows in, probabilities and decision out."""

    decode: Decoder | None = None  # images decoded by TensorFlow, as training decoded them

    def load_context(self, context: Any) -> None:
        import keras

        from skinlesion.model.inference import Scorer
        from skinlesion.model.layers import register_layers

        register_layers()
        self.scorer = Scorer(keras.models.load_model(context.artifacts[KERAS_ARTIFACT]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from skinlesion.model.metadata import encode_metadata

        try:
            images, patient, violations = parse_request(
                model_input, self.scorer.reliability, self.decode
            )
        except RequestError as err:
            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from err
        scored = self.scorer.score(
            images, encode_metadata(patient), BATCH_SIZE, violations=violations
        )
        table = answer(scored.probs, scored.assessment)
        if (params or {}).get(EMBEDDING_PARAM) and scored.features is not None:
            table[EMBEDDING_COLUMN] = [
                row.astype("float16").astype("float64").tolist() for row in scored.features
            ]
        return table


def signature() -> Any:
    """Request and answer columns, as the MLflow UI and scoring server show them."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    inputs = Schema(
        [
            ColSpec("string", "image"),
            ColSpec("double", "age", required=False),
            ColSpec("string", "sex", required=False),
            ColSpec("string", "localization", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec("string", "prediction"),
            ColSpec(Array("string"), "prediction_set"),
            ColSpec("boolean", "refer"),
            ColSpec("string", "refer_reason"),
            *(ColSpec("double", c) for c in CLASSES),
        ]
    )
    params = ParamSchema([ParamSpec(EMBEDDING_PARAM, "boolean", False)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def encode_image(image: np.ndarray) -> str:
    """A uint8 RGB image as base64 JPEG text: how a client sends one."""
    import tensorflow as tf

    return base64.b64encode(tf.io.encode_jpeg(image, quality=95).numpy()).decode("ascii")


def requirements() -> list[str]:
    """Pinned packages of the model's environment. TensorFlow is whichever distribution
    provides it here: tensorflow, or tensorflow-cpu in the CPU step image."""
    from importlib.metadata import packages_distributions, version

    tensorflow = packages_distributions().get("tensorflow", ["tensorflow"])[0]
    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "keras", tensorflow, "pillow")]


def log_serving_model(
    keras_path: str | Path, example_image: np.ndarray, members: list[str] | None = None
) -> Any:
    """Log the saved Keras model as the servable MLflow model of the active run, with its
    signature and a one-image request as the input example; returns MLflow's ModelInfo.
    An ensemble's ``members`` go into the model's metadata (the server's ``GET /model``
    names them)."""
    from importlib.metadata import version

    example = pd.DataFrame(
        {
            "image": [encode_image(example_image)],
            "age": [55.0],
            "sex": ["female"],
            "localization": ["back"],
        }
    )
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=LesionClassifier(),
        artifacts={KERAS_ARTIFACT: str(keras_path)},
        signature=signature(),
        input_example=example,
        pip_requirements=requirements(),
        metadata={
            "skinlesion_version": version("skinlesion"),
            "needs": "skinlesion",
            **({"members": list(members)} if members else {}),
        },
    )


def is_serving_model(info: Any) -> bool:
    """Whether MLflow's ModelInfo describes a model of this module (not the Keras flavour
    that earlier versions logged)."""
    loader = info.flavors.get("python_function", {}).get("loader_module", "")
    return loader == "mlflow.pyfunc.model"


def keras_file_of(model_dir: str | Path) -> Path | None:
    """The Keras file inside a downloaded MLflow model of this kind, else None (the Keras
    flavour that earlier versions logged)."""
    found = sorted((Path(model_dir) / "artifacts").glob("*.keras"))
    return found[0] if found else None
