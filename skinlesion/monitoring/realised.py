"""How well the served versions really did: their logged answers against the diagnoses
that came back (`skinlesion data add-labels` puts them into the data), week by week.

A log record and a confirmed diagnosis meet by the image's SHA-256, which the log keeps
for every image and which the data's files hash to. Only images someone chose to confirm
come back, so these figures describe that selection (often the referred or excised
lesions), not all traffic: the report says how many each week rests on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from skinlesion.evaluation.resampling import balanced_accuracy, melanoma_sensitivity
from skinlesion.labels import CLASSES, labels_of


def confirmed_labels(data_dir: str | Path, workers: int) -> pd.DataFrame:
    """``image_sha256`` and ``dx`` of every image of a HAM10000-layout folder."""
    from skinlesion.data.catalog import content_hashes, load_catalog

    root = Path(data_dir)
    catalog = load_catalog(root)
    digests = content_hashes(root, catalog["image_path"], workers)
    labels = pd.DataFrame({"image_sha256": digests, "dx": catalog["dx"].astype(str)})
    return labels[labels["image_sha256"] != ""].drop_duplicates("image_sha256")


def _figures(rows: pd.DataFrame) -> dict[str, float | int]:
    y = labels_of(rows)
    hit = (rows["prediction"] == rows["dx"]).to_numpy()
    total = np.bincount(y, minlength=len(CLASSES)).astype(float)
    correct = np.bincount(y[hit], minlength=len(CLASSES)).astype(float)
    answered = ~rows["refer"].fillna(False).astype(bool).to_numpy()
    return {
        "labelled": len(rows),
        "accuracy": float(hit.mean()),
        "balanced_accuracy": float(balanced_accuracy(total, correct)),
        "melanoma_sensitivity": float(melanoma_sensitivity(total, correct)),
        "referred": float(1 - answered.mean()),
        "answered_accuracy": float(hit[answered].mean()) if answered.any() else float("nan"),
    }


def realised_accuracy(records: pd.DataFrame, labels: pd.DataFrame) -> list[dict]:
    """Per week (Monday, UTC) and served model version: how many logged images have a
    confirmed diagnosis, and the accuracy, balanced accuracy (over the classes present),
    melanoma sensitivity and referral share of the answers on them."""
    if records.empty or labels.empty:
        return []
    joined = records.merge(labels, on="image_sha256", how="inner")
    joined = joined[joined["dx"].isin(CLASSES)]
    if joined.empty:
        return []
    stamps = pd.to_datetime(joined["time"], utc=True)
    joined["week"] = (stamps.dt.normalize() - pd.to_timedelta(stamps.dt.weekday, "D")).dt.date
    weeks = []
    for (week, version), rows in joined.groupby(["week", "model_version"], sort=True):
        weeks.append({"week": str(week), "model_version": str(version), **_figures(rows)})
    return weeks
