"""Reading a HAM10000 folder in either layout users have.

* the official download: ``HAM10000_metadata.csv`` (or Dataverse's ``HAM10000_metadata.tab``)
  beside ``HAM10000_images_part_1/`` and ``HAM10000_images_part_2/``;
* a single ``images/`` folder beside ``HAM10000_metadata.csv``.

The result is a *catalog*: the metadata rows plus ``image_path``, relative to the data
folder so that manifests stay valid when the folder moves (cluster, laptop, CI).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from skinlesion.errors import SkinlesionError

METADATA_NAMES: tuple[str, ...] = (
    "HAM10000_metadata.csv",
    "HAM10000_metadata.tab",
    "HAM10000_metadata",
)
IMAGE_DIRS: tuple[str, ...] = (
    "images",
    "HAM10000_images_part_1",
    "HAM10000_images_part_2",
    "HAM10000_images",
)
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png"})


class DatasetLayoutError(SkinlesionError, FileNotFoundError):
    """The folder is not in a HAM10000 layout."""


def find_metadata(data_dir: Path) -> Path:
    """The metadata file of a HAM10000 folder, CSV or Dataverse ``.tab``."""
    for name in METADATA_NAMES:
        candidate = data_dir / name
        if candidate.is_file():
            return candidate
    raise DatasetLayoutError(
        f"no HAM10000 metadata in {data_dir}: expected one of {', '.join(METADATA_NAMES)}. "
        "Point --data-dir (or params.yaml data.raw_dir) at a HAM10000 folder, "
        "or get one with `skinlesion data download`."
    )


def read_metadata(path: Path) -> pd.DataFrame:
    """Metadata as strings except ``age``; the ``.tab`` export is tab separated."""
    sep = "\t" if path.suffix == ".tab" else ","
    frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    frame.columns = [str(c).strip().strip('"') for c in frame.columns]
    if "age" in frame.columns:
        frame["age"] = pd.to_numeric(frame["age"], errors="coerce")
    return frame


def index_images(data_dir: Path) -> dict[str, Path]:
    """Map image_id (file stem) to its path, relative to ``data_dir``, over all image folders."""
    found: dict[str, Path] = {}
    for sub in IMAGE_DIRS:
        folder = data_dir / sub
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.suffix.lower() in IMAGE_SUFFIXES:
                found.setdefault(path.stem, path.relative_to(data_dir))
    return found


def load_catalog(data_dir: str | Path) -> pd.DataFrame:
    """Metadata joined with image paths; ``image_path`` is empty where no file exists."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DatasetLayoutError(f"data folder does not exist: {root}")
    frame = read_metadata(find_metadata(root))
    images = index_images(root)
    if "image_id" in frame.columns:
        paths = frame["image_id"].map(lambda i: images.get(str(i)))
        frame["image_path"] = paths.map(lambda p: p.as_posix() if p is not None else None)
    else:
        frame["image_path"] = None
    return frame


def file_sha256(path: Path) -> str:
    """Content hash, so that byte-identical images are caught whatever their names."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_hashes(data_dir: Path, rel_paths: Iterable[str | None], workers: int = 8) -> list[str]:
    """SHA-256 of each image (empty string for a missing one), read in parallel."""

    def one(rel: str | None) -> str:
        if not rel:
            return ""
        path = data_dir / rel
        return file_sha256(path) if path.is_file() else ""

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, rel_paths))
