"""From one request and its answer to the prediction log's records, one per image.

Only JSON requests in the pandas forms (``dataframe_records``, ``dataframe_split``) are
logged: the forms this project's clients and docs use. Anything else is answered as
usual and not logged (:func:`request_rows` returns None). The request body is parsed
once (:func:`request_payload`), on the request path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import time
from typing import Any

from PIL import Image, UnidentifiedImageError

from skinlesion.labels import CLASSES
from skinlesion.model.servable import EMBEDDING_COLUMN, EMBEDDING_PARAM


def request_payload(body: bytes) -> dict[str, Any] | None:
    """The JSON object of a request, else None."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def request_rows(payload: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The rows of a request in a pandas form, else None."""
    records = payload.get("dataframe_records")
    if isinstance(records, list) and all(isinstance(r, dict) for r in records):
        return records
    split = payload.get("dataframe_split")
    if isinstance(split, dict) and isinstance(split.get("data"), list):
        columns = split.get("columns") or []
        return [dict(zip(columns, row, strict=False)) for row in split["data"]]
    return None


def ask_embeddings(payload: dict[str, Any]) -> tuple[bytes, bool]:
    """The request with the model's ``embedding`` inference parameter switched on, and
    whether the client had asked for embeddings itself (then its answer keeps them)."""
    params = payload.get("params") or {}
    asked = bool(params.get(EMBEDDING_PARAM))
    return json.dumps({**payload, "params": {**params, EMBEDDING_PARAM: True}}).encode(), asked


def keeps_image(log_images: bool | str, prediction: dict[str, Any]) -> bool:
    """Whether the log keeps an image's bytes: ``serve.log_images`` true keeps every one,
    ``referred`` those answered with ``refer: true`` (what a reviewer will look at)."""
    if log_images == "referred":
        return bool(prediction.get("refer"))
    return log_images is True


def _image_facts(value: Any) -> dict[str, Any]:
    """SHA-256, bytes and pixel size of a base64 image (None where it is unreadable)."""
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    width = height = None
    try:
        with Image.open(io.BytesIO(raw)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError):
        pass
    return {
        "image_sha256": hashlib.sha256(raw).hexdigest() if raw else None,
        "image_bytes": len(raw),
        "image_width": width,
        "image_height": height,
    }


def _number(value: Any) -> float | None:
    """One column type for Parquet: a float, or None for anything else."""
    try:
        return float(value) if value is not None and str(value).strip() else None
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value).strip().lower() or None


def take_records(
    answer: bytes,
    rows: list[dict[str, Any]],
    served: Any,
    request_id: str,
    received: float,
    log_images: bool | str,
    keep_embeddings: bool = False,
) -> tuple[bytes, list[dict[str, Any]]]:
    """The answer the client gets (without embeddings, unless it asked for them) and one
    record per image, with the image's base64 bytes where ``log_images`` keeps them
    (:func:`keeps_image`)."""
    payload = json.loads(answer)
    predictions = payload["predictions"]
    embeddings = [
        p.get(EMBEDDING_COLUMN) if keep_embeddings else p.pop(EMBEDDING_COLUMN, None)
        for p in predictions
    ]
    stamp = (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(received))
        + f".{int(received % 1 * 1000):03d}Z"
    )
    records = []
    for row, (request, prediction, embedding) in enumerate(
        zip(rows, predictions, embeddings, strict=True)
    ):
        record: dict[str, Any] = {
            "time": stamp,
            "request_id": request_id,
            "row": row,
            "model_uri": served.uri,
            "model_version": served.version,
            **_image_facts(request.get("image")),
            "age": _number(request.get("age")),
            "sex": _text(request.get("sex")),
            "localization": _text(request.get("localization")),
            "prediction": prediction.get("prediction"),
            "prediction_set": prediction.get("prediction_set"),
            "refer": prediction.get("refer"),
            "refer_reason": prediction.get("refer_reason"),
            **{c: prediction.get(c) for c in CLASSES},
            "embedding": embedding,
        }
        if keeps_image(log_images, prediction):
            record["image"] = request.get("image")
        records.append(record)
    return json.dumps(payload).encode(), records
