"""`skinlesion score`: a registered model over a folder (or S3 prefix) of images, into one
Parquet file, through the server's own path.

Each chunk of images goes through the MLflow model exactly as a request to
`skinlesion serve` does (:class:`skinlesion.model.servable.LesionClassifier`: the input
contract, the probabilities, the decision, the prediction set and the referral), so a
batch answer equals the served one. An image the model refuses (not an image, too small,
not RGB) is kept as a row with its ``error``, and the batch goes on.

Resumable: each finished chunk is written at once as a part file beside the output
(``<out>.parts/``); a run started again after a kill skips the images its parts hold,
when they were scored by the same model version on the same data version (anything else
is refused rather than mixed). When every image is scored the parts become ``<out>``.
Every row names the model version and the data version (a hash of the images' paths and
SHA-256 digests), so a table of predictions says what produced it.

Patient fields come from a ``metadata.csv`` (or a HAM10000 metadata file) at the top of
the folder, with ``image_id`` and any of ``age``, ``sex``, ``localization``; images without
a row are scored without them.
"""

from __future__ import annotations

import base64
import hashlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from skinlesion.data.catalog import (
    IMAGE_SUFFIXES,
    METADATA_NAMES,
    content_hashes,
    read_metadata,
)
from skinlesion.data.feedback import PATIENT
from skinlesion.errors import SkinlesionError
from skinlesion.progress import progress

METADATA_FILES = ("metadata.csv", *METADATA_NAMES)


class BatchScoringError(SkinlesionError, ValueError):
    """The batch cannot be scored as asked; the message says why."""


@dataclass(frozen=True)
class BatchResult:
    """What a `score` run did."""

    out: str
    images: int
    scored_now: int
    resumed: int  # images a previous, killed run had scored already
    errors: int
    referred: int
    seconds: float
    model_uri: str
    model_version: str
    data_version: str

    @property
    def images_per_s(self) -> float:
        return self.scored_now / self.seconds if self.seconds else 0.0


def find_images(folder: Path) -> pd.DataFrame:
    """Every image below ``folder`` (``image_id`` = file stem, ``path`` relative, its
    SHA-256), with the patient fields of a metadata file at the top, if any."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise BatchScoringError(f"no images (.jpg, .jpeg, .png) below {folder}")
    relative = [p.relative_to(folder).as_posix() for p in paths]
    frame = pd.DataFrame(
        {
            "image_id": [p.stem for p in paths],
            "path": relative,
            "sha256": content_hashes(folder, relative),
        }
    )
    duplicated = frame["image_id"][frame["image_id"].duplicated()]
    if len(duplicated):
        raise BatchScoringError(
            f"image ids must be unique below {folder}: {', '.join(duplicated.head(5))}"
        )
    metadata = next((folder / n for n in METADATA_FILES if (folder / n).is_file()), None)
    if metadata is not None:
        table = read_metadata(metadata)
        known = ["image_id", *(c for c in PATIENT if c in table.columns)]
        frame = frame.merge(table[known].drop_duplicates("image_id"), on="image_id", how="left")
    return frame


def data_version_of(images: pd.DataFrame) -> str:
    """A hash of the images' paths and digests: the same folder gives the same version."""
    digest = hashlib.sha256()
    for path, sha in zip(images["path"], images["sha256"], strict=True):
        digest.update(f"{path}\t{sha}\n".encode())
    return digest.hexdigest()[:16]


def _parts(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _done(parts: Path, model_version: str, data_version: str) -> set[str]:
    """Image ids the parts of an earlier run hold; parts of another model or data are
    refused."""
    done: set[str] = set()
    for part in sorted(parts.glob("part-*.parquet")):
        table = pd.read_parquet(part, columns=["image_id", "model_version", "data_version"])
        if len(table) and (
            table["model_version"].iloc[0] != model_version
            or table["data_version"].iloc[0] != data_version
        ):
            raise BatchScoringError(
                f"{parts} holds predictions of model version {table['model_version'].iloc[0]} "
                f"on data {table['data_version'].iloc[0]}, not of version {model_version} "
                f"on {data_version}: delete it, or write to another --out"
            )
        done.update(table["image_id"])
    return done


def _records(folder: Path, rows: pd.DataFrame) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "image": [
                base64.b64encode((folder / p).read_bytes()).decode("ascii") for p in rows["path"]
            ]
        }
    )
    for column in PATIENT:
        if column in rows.columns:
            frame[column] = rows[column].to_numpy()
    return frame


def _answer(model: Any, folder: Path, rows: pd.DataFrame) -> pd.DataFrame:
    """The model's answers for ``rows``; when a row is refused, row by row, so that only
    the refused rows carry an ``error``."""
    from mlflow.exceptions import MlflowException

    try:
        answers = model.predict(_records(folder, rows))
        answers["error"] = ""
        return answers
    except MlflowException:
        if len(rows) == 1:
            raise
    pieces = []
    for i in range(len(rows)):
        try:
            pieces.append(_answer(model, folder, rows.iloc[[i]]))
        except MlflowException as err:
            pieces.append(pd.DataFrame({"error": [err.message]}))
    return pd.concat(pieces, ignore_index=True)


def _write_part(part: Path, table: pd.DataFrame) -> None:
    """Atomically: a part file exists whole or not at all."""
    with tempfile.NamedTemporaryFile(dir=part.parent, suffix=".tmp", delete=False) as handle:
        temporary = Path(handle.name)
    table.to_parquet(temporary, index=False)
    temporary.replace(part)


def score_folder(
    model_uri: str, folder: str | Path, out: str | Path, chunk_size: int = 256
) -> BatchResult:
    """Score every image below ``folder`` (local; see :func:`score` for S3) with the MLflow
    model ``model_uri`` (an alias is pinned to its version first), resuming a killed run."""
    from skinlesion.model.loading import load_pyfunc
    from skinlesion.promotion.registry import resolve_version

    root, target = Path(folder), Path(out)
    images = find_images(root)
    data_version = data_version_of(images)
    resolved, _ = resolve_version(model_uri)
    pinned, version = resolved.uri, resolved.version or resolved.uri
    parts = _parts(target)
    parts.mkdir(parents=True, exist_ok=True)
    done = _done(parts, version, data_version)
    todo = images[~images["image_id"].isin(done)].reset_index(drop=True)
    model = load_pyfunc(pinned)
    started = time.perf_counter()
    first = len(list(parts.glob("part-*.parquet")))
    chunks = range(0, len(todo), chunk_size)
    for number, start in enumerate(progress(chunks, total=len(chunks), desc="scoring"), first):
        rows = todo.iloc[start : start + chunk_size].reset_index(drop=True)
        answers = _answer(model, root, rows).reset_index(drop=True)
        table = pd.concat([rows, answers], axis=1).assign(
            model_uri=pinned,
            model_version=version,
            data_version=data_version,
            scored_at=pd.Timestamp.now(tz="UTC").isoformat(),
        )
        _write_part(parts / f"part-{number:05d}.parquet", table)
    seconds = time.perf_counter() - started
    merged = pd.concat(
        [pd.read_parquet(p) for p in sorted(parts.glob("part-*.parquet"))], ignore_index=True
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_part(target, merged)
    for part in parts.glob("part-*.parquet"):
        part.unlink()
    parts.rmdir()
    return BatchResult(
        out=str(target),
        images=len(merged),
        scored_now=len(todo),
        resumed=len(done),
        errors=int((merged["error"].fillna("") != "").sum()),
        referred=int(merged.get("refer", pd.Series(dtype=bool)).eq(True).sum()),
        seconds=round(seconds, 2),
        model_uri=pinned,
        model_version=version,
        data_version=data_version,
    )


def score(model_uri: str, source: str, out: str | Path, chunk_size: int = 256) -> BatchResult:
    """:func:`score_folder` on a folder, or on an ``s3://`` prefix downloaded next to
    ``out`` first (``<out>.input/``; downloaded again by a resumed run, in case the kill
    came during the download)."""
    if not source.startswith("s3://"):
        return score_folder(model_uri, source, out, chunk_size)
    from skinlesion.data.storage import mirror_from_s3

    local = Path(out).with_name(Path(out).name + ".input")
    mirror_from_s3(source, local)
    return score_folder(model_uri, local, out, chunk_size)
