"""Confirmed diagnoses back into the data: `skinlesion data add-labels FILE --to DATA`.

A clinic confirms what a served image was (histopathology, follow-up, ...). The
feedback file is a CSV with ``dx`` and ``dx_type`` per image, and one way to find the
image: ``image`` (a file, relative to the feedback file), or ``image_sha256`` or
``request_id`` (with ``row`` for a request of several images) found in the prediction
log (:mod:`skinlesion.serving.prediction_log`), whose records hold the image only when
``serve.log_images`` was on. Optional: ``lesion_id``, ``image_id``, ``age``, ``sex``,
``localization`` (else taken from the log's record).

The images become new rows of the HAM10000 folder ``DATA`` (its metadata and images),
so its content hash, the data version, changes: `skinlesion data publish` pins it for
the cluster, and the next scheduled run reports "data changed" (`check-changes`).

* **New lesions only**: a ``lesion_id`` already in the data is refused (give none and a
  new one is made). An image already there with the same diagnosis is skipped; with
  another one it is a relabel, refused unless ``allow_relabel``, and reported either way.
* **The same validation**: the data with the new rows must pass the Great Expectations
  suite of `skinlesion validate` (checked on a staging copy made of hard links) before
  anything in ``DATA`` is touched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from skinlesion.config.schema import ValidationSettings
from skinlesion.data.catalog import (
    IMAGE_DIRS,
    content_hashes,
    find_metadata,
    load_catalog,
    read_metadata,
)
from skinlesion.errors import SkinlesionError

PATIENT = ("age", "sex", "localization")


class FeedbackError(SkinlesionError, ValueError):
    """The feedback cannot be added; the message names the row and why."""


@dataclass
class FeedbackResult:
    """What `add-labels` did to the data."""

    added: list[str] = field(default_factory=list)  # image ids of new rows
    skipped: list[str] = field(default_factory=list)  # already there, same diagnosis
    relabelled: list[str] = field(default_factory=list)  # already there, other diagnosis
    old_version: str = ""
    new_version: str = ""

    def describe(self) -> str:
        relabel = f", {len(self.relabelled)} relabelled" if self.relabelled else ""
        return (
            f"{len(self.added)} new image(s) of new lesions added, {len(self.skipped)} "
            f"already in the data{relabel}; data version {self.old_version[:12]} -> "
            f"{self.new_version[:12]}"
        )


def _resolve(row: pd.Series, n: int, base: Path, log: pd.DataFrame) -> tuple[bytes, dict]:
    """The image bytes of feedback row ``n`` and the log record it matched (or {})."""
    import base64

    if isinstance(row.get("image"), str) and row["image"]:
        path = base / row["image"]
        if not path.is_file():
            raise FeedbackError(f"row {n}: image file {path} not found")
        return path.read_bytes(), {}
    record: dict[str, Any] = {}
    if not log.empty and isinstance(row.get("image_sha256"), str):
        found = log[log["image_sha256"] == row["image_sha256"]]
        record = found.iloc[-1].to_dict() if len(found) else {}
    elif not log.empty and isinstance(row.get("request_id"), str):
        found = log[
            (log["request_id"] == row["request_id"])
            & (log["row"] == int(row.get("row") if pd.notna(row.get("row")) else 0))
        ]
        record = found.iloc[-1].to_dict() if len(found) else {}
    else:
        raise FeedbackError(
            f"row {n}: give the image (an `image` file), or its `image_sha256` or "
            "`request_id` and the prediction log (--log)"
        )
    if not record:
        raise FeedbackError(f"row {n}: no prediction log record matches it")
    if not isinstance(record.get("image"), str):
        raise FeedbackError(
            f"row {n}: the log holds no image for it (serve.log_images was off): give the "
            "image in an `image` column"
        )
    return base64.b64decode(record["image"]), record


def _new_id(prefix: str, taken: set[str], seed: str) -> str:
    """An id of HAM10000's form (prefix + 7 digits) not in ``taken``, from ``seed``."""
    number = int(seed[:12], 16) % 10_000_000
    while f"{prefix}{number:07d}" in taken:
        number = (number + 1) % 10_000_000
    return f"{prefix}{number:07d}"


def _staged(data_dir: Path, stage: Path) -> None:
    """``stage`` as a copy of ``data_dir`` made of hard links (a copy across devices)."""
    for source in data_dir.rglob("*"):
        target = stage / source.relative_to(data_dir)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)


def add_labels(
    feedback_file: str | Path,
    data_dir: str | Path,
    settings: ValidationSettings,
    workers: int,
    log: pd.DataFrame | None = None,
    allow_relabel: bool = False,
) -> FeedbackResult:
    """Add the confirmed images of ``feedback_file`` to ``data_dir`` (see the module);
    ``log`` holds the prediction log's records (the command line reads them) that rows
    may name an image by."""
    from skinlesion.data.validation import validate_dataset
    from skinlesion.data.versions import list_folder

    root = Path(data_dir)
    feedback = pd.read_csv(feedback_file, dtype=str, keep_default_na=False, na_values=[""])
    missing = {"dx", "dx_type"} - set(feedback.columns)
    if missing:
        raise FeedbackError(f"{feedback_file} lacks the column(s) {', '.join(sorted(missing))}")
    catalog = load_catalog(root)
    digests = content_hashes(root, catalog["image_path"], workers)
    hashes = {d: i for i, d in zip(catalog["image_id"], digests, strict=True) if d}
    labels = dict(zip(catalog["image_id"], catalog["dx"], strict=True))
    known = set(catalog["lesion_id"])  # lesions of the data, which feedback never extends
    lesions, ids = set(known), set(catalog["image_id"])  # every id taken, new ones too
    new_lesions: dict[str, str] = {}  # a new lesion of this file -> its diagnosis
    log = pd.DataFrame() if log is None else log
    result = FeedbackResult(old_version=list_folder(root, workers).version)
    metadata = read_metadata(find_metadata(root))
    new_rows, new_files = [], {}
    for n, row in feedback.iterrows():
        raw, record = _resolve(row, int(n), Path(feedback_file).parent, log)
        sha = hashlib.sha256(raw).hexdigest()
        if sha in hashes:
            existing = hashes[sha]
            if labels[existing] == row["dx"]:
                result.skipped.append(existing)
                continue
            if not allow_relabel:
                raise FeedbackError(
                    f"row {n}: the image is {existing} in the data, labelled "
                    f"{labels[existing]!r}, not {row['dx']!r}: a relabel is refused unless "
                    "asked for (--allow-relabel)"
                )
            metadata.loc[metadata["image_id"] == existing, ["dx", "dx_type"]] = [
                row["dx"],
                row["dx_type"],
            ]
            result.relabelled.append(existing)
            continue
        lesion = row.get("lesion_id") if isinstance(row.get("lesion_id"), str) else None
        if lesion in known:
            raise FeedbackError(
                f"row {n}: lesion {lesion} is in the data already: feedback adds new lesions only"
            )
        if lesion in new_lesions and new_lesions[lesion] != row["dx"]:
            raise FeedbackError(
                f"row {n}: lesion {lesion} is {new_lesions[lesion]!r} in an earlier row of this "
                f"file, not {row['dx']!r}: one lesion has one diagnosis"
            )
        lesion = lesion or _new_id("HAM_", lesions, sha)
        image_id = row.get("image_id") if isinstance(row.get("image_id"), str) else None
        image_id = image_id or _new_id("ISIC_", ids, sha[12:])
        lesions.add(lesion)
        new_lesions[lesion] = row["dx"]
        ids.add(image_id)
        patient = {c: row.get(c) if pd.notna(row.get(c)) else record.get(c) for c in PATIENT}
        new_rows.append(
            {"lesion_id": lesion, "image_id": image_id, "dx": row["dx"],
             "dx_type": row["dx_type"], **patient}
        )  # fmt: skip
        new_files[image_id] = raw
        result.added.append(image_id)
    if not new_rows and not result.relabelled:
        result.new_version = result.old_version
        return result
    # a field none of the new rows gives (say, no age) stays empty in them: left out of the
    # concatenation, which must not take its dtype from an all-missing column
    additions = pd.DataFrame(new_rows).dropna(axis=1, how="all")
    merged = pd.concat([metadata, additions], ignore_index=True)
    folder = next((d for d in IMAGE_DIRS if (root / d).is_dir()), IMAGE_DIRS[0])
    meta_name = find_metadata(root).name
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        stage = Path(tmp) / root.name
        _staged(root, stage)
        _write(stage, folder, meta_name, merged, new_files)
        with tempfile.TemporaryDirectory() as reports:
            validate_dataset(stage, reports, settings, workers).require_valid()
    _write(root, folder, meta_name, merged, new_files)
    result.new_version = list_folder(root, workers).version
    return result


def _suffix(raw: bytes) -> str:
    """The file extension of encoded image bytes (PNG or JPEG, what the model reads)."""
    return ".png" if raw.startswith(b"\x89PNG") else ".jpg"


def _write(
    root: Path, folder: str, meta_name: str, merged: pd.DataFrame, files: dict[str, bytes]
) -> None:
    """The new images, then the metadata, replaced whole (never half written)."""
    (root / folder).mkdir(parents=True, exist_ok=True)
    for image_id, raw in files.items():
        (root / folder / f"{image_id}{_suffix(raw)}").write_bytes(raw)
    sep = "\t" if meta_name.endswith(".tab") else ","
    target = root / meta_name
    temporary = target.with_name(target.name + ".tmp")
    merged.to_csv(temporary, index=False, sep=sep)
    temporary.replace(target)
