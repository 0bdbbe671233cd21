"""Stage 2: lesion-grouped, stratified train / val / test split.

Images are grouped by ``lesion_id``; lesions that share byte-identical images are merged
into one group as well, so neither a lesion nor an identical picture can end up on two
sides. Groups are then allocated per diagnosis (stratified) with a fixed seed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skinlesion.dataset import content_hashes, load_catalog
from skinlesion.leakage import SPLITS, assert_no_leakage

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


@dataclass(frozen=True)
class SplitSettings:
    """The ``split`` section of params.yaml."""

    seed: int = 42
    val_fraction: float = 0.15
    test_fraction: float = 0.15

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> SplitSettings:
        settings = cls(**params.get("split", {}))
        if not (
            settings.val_fraction > 0
            and settings.test_fraction > 0
            and settings.val_fraction + settings.test_fraction < 1
        ):
            raise ValueError("split fractions must be positive and sum to less than 1")
        return settings


def lesion_groups(frame: pd.DataFrame) -> pd.Series:
    """Group id per row: lesions joined when they share an image hash (union-find)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for lesion in frame["lesion_id"].astype(str):
        find(lesion)
    for _, lesions in frame[frame["sha256"] != ""].groupby("sha256")["lesion_id"]:
        first, *rest = [str(x) for x in lesions.unique()]
        for other in rest:
            parent[find(other)] = find(first)
    return frame["lesion_id"].astype(str).map(find)


def assign_splits(groups: pd.DataFrame, settings: SplitSettings) -> dict[str, str]:
    """Map group_id to a split, allocating each diagnosis's groups by the fractions.

    A class with at least three groups gets at least one in each split, so that small
    classes (df, vasc) are represented in validation and test.
    """
    rng = np.random.default_rng(settings.seed)
    assignment: dict[str, str] = {}
    for _dx, members in sorted(groups.groupby("dx"), key=lambda kv: str(kv[0])):
        ids = np.array(sorted(members["group_id"].astype(str)))
        rng.shuffle(ids)
        n = len(ids)
        n_test = max(1, round(n * settings.test_fraction)) if n >= 3 else 0
        n_val = max(1, round(n * settings.val_fraction)) if n >= 3 else 0
        for i, gid in enumerate(ids):
            assignment[gid] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return assignment


def split_dataset(data_dir: str | Path, settings: SplitSettings, workers: int = 8) -> pd.DataFrame:
    """The split manifest of a HAM10000 folder; raises LeakageError if the result leaks."""
    root = Path(data_dir)
    frame = load_catalog(root)
    frame["sha256"] = content_hashes(root, frame["image_path"], workers)
    frame["group_id"] = lesion_groups(frame)
    # A group's stratum is its most common diagnosis (one per lesion after validation).
    group_dx = (
        frame.groupby("group_id")["dx"].agg(lambda s: s.mode().iloc[0]).rename("dx").reset_index()
    )
    assignment = assign_splits(group_dx, settings)
    frame["split"] = frame["group_id"].map(assignment)
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
