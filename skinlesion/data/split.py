"""Step 3 of the flow: lesion-grouped, stratified train / val / test split.

Images are grouped by ``lesion_id``; lesions that share byte-identical images are merged
into one group as well, so neither a lesion nor an identical picture can end up on two
sides.

A group's split is a deterministic function of its id and ``split.seed`` alone: a seeded
hash of the id, read as a number in [0, 1), against the fractions. So the split is
*stable*: when new lesions arrive, every old lesion keeps its side and the new ones only
add rows, and a champion trained last month is never scored on lesions it was trained on.
Because the hash does not depend on the diagnosis, each diagnosis gets the fractions in
expectation (stratified by construction, up to sampling noise of a few lesions in the
smallest classes) rather than exactly, which a rank-based allocation would give only at
the price of moving old lesions whenever data grows.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from skinlesion.config.schema import SplitSettings
from skinlesion.data.catalog import content_hashes, load_catalog
from skinlesion.data.leakage import SPLITS, assert_no_leakage

log = logging.getLogger(__name__)

MANIFEST_COLUMNS: tuple[str, ...] = (
    "image_id",
    "lesion_id",
    "dx",
    "split",
    "image_path",
    "sha256",
    "group_id",
    "dx_type",
    "age",
    "sex",
    "localization",
)


def lesion_groups(frame: pd.DataFrame) -> pd.Series:
    """Group id per row: lesions joined when they share an image hash (union-find). A
    group is named by its smallest lesion id, whatever order the rows come in."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for lesion in frame["lesion_id"].astype(str):
        find(lesion)
    for _, lesions in frame[frame["sha256"] != ""].groupby("sha256")["lesion_id"]:
        first, *rest = [find(str(x)) for x in lesions.unique()]
        for other in rest:
            low, high = sorted((find(first), find(other)))
            parent[high] = low
    return frame["lesion_id"].astype(str).map(find)


def split_position(group_id: str, seed: int) -> float:
    """Where a group falls in [0, 1): a seeded SHA-256 of its id, so that it depends on
    nothing else in the data."""
    digest = hashlib.sha256(f"{seed}:{group_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(group_id: str, settings: SplitSettings) -> str:
    """The split of one group: test below ``test_fraction``, then val, then train."""
    position = split_position(group_id, settings.seed)
    if position < settings.test_fraction:
        return "test"
    if position < settings.test_fraction + settings.val_fraction:
        return "val"
    return "train"


def split_dataset(data_dir: str | Path, settings: SplitSettings, workers: int) -> pd.DataFrame:
    """The split manifest of a HAM10000 folder; raises LeakageError if the result leaks."""
    root = Path(data_dir)
    frame = load_catalog(root)
    frame["sha256"] = content_hashes(root, frame["image_path"], workers)
    frame["group_id"] = lesion_groups(frame)
    frame["split"] = [assign_split(g, settings) for g in frame["group_id"]]
    manifest = frame[list(MANIFEST_COLUMNS)].sort_values(["split", "image_id"], ignore_index=True)
    assert_no_leakage(manifest)
    return manifest


def split_summary(manifest: pd.DataFrame) -> dict[str, Any]:
    """Counts of images and lesions per split and class, written as DVC metrics."""
    summary: dict[str, Any] = {}
    for split in SPLITS:
        part = manifest[manifest["split"] == split]
        summary[split] = {
            "images": len(part),
            "lesions": int(part["lesion_id"].nunique()),
            "per_class": {
                str(k): int(v) for k, v in part["dx"].value_counts().sort_index().items()
            },
        }
    return summary


def write_manifest(manifest: pd.DataFrame, out: str | Path, summary: str | Path | None) -> None:
    """CSV manifest (diff-friendly under DVC) and an optional JSON summary."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(path, index=False)
    if summary is not None:
        spath = Path(summary)
        spath.parent.mkdir(parents=True, exist_ok=True)
        spath.write_text(json.dumps(split_summary(manifest), indent=2) + "\n", encoding="utf-8")


def read_manifest(path: str | Path) -> pd.DataFrame:
    """A manifest written by :func:`write_manifest`, ids kept as strings."""
    return pd.read_csv(
        path,
        dtype={"image_id": str, "lesion_id": str, "sha256": str, "group_id": str},
        keep_default_na=False,
        na_values={"age": [""]},
    )
