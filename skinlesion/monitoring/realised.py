"""How well the served versions really did: their logged answers against the diagnoses
that came back (`skinlesion data add-labels` puts them into the data), week by week.

A log record and a confirmed diagnosis meet by the image's SHA-256, which the log keeps
for every image and which the data's files hash to. Only images someone chose to confirm
come back, so these figures describe that selection (often the referred or excised
lesions), not all traffic: the report says how many each week rests on.

Reviewed images count too (:func:`reviewed_labels`): the agreed answers of the review store
(`skinlesion review`), exported to the data or not yet. An image a reviewer called "not a
lesion / unusable image" is counted per week as such (``not_a_lesion``): evidence of what
the server was sent, never part of the accuracy.
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


def reviewed_labels(store_url: str | None) -> pd.DataFrame:
    """``image_sha256`` and ``dx`` of every image whose reviews agree (a class, or
    ``not_a_lesion``); empty without a store (a SQLite file that does not exist is none)."""
    from skinlesion.review.store import ReviewStore, decisions

    empty = pd.DataFrame(columns=["image_sha256", "dx"])
    if not store_url:
        return empty
    if (
        store_url.startswith("sqlite:///")
        and not Path(store_url.removeprefix("sqlite:///")).exists()
    ):
        return empty
    store = ReviewStore(store_url)
    try:
        agreed = [(d.image_sha256, d.answer) for d in decisions(store.all()) if d.answer]
    finally:
        store.close()
    return pd.DataFrame(agreed, columns=["image_sha256", "dx"]) if agreed else empty


def merged_labels(data: pd.DataFrame, reviewed: pd.DataFrame) -> pd.DataFrame:
    """The data's labels and the reviewed ones; the data's win where both have an image
    (what was exported, checked and validated)."""
    return pd.concat([data, reviewed], ignore_index=True).drop_duplicates("image_sha256")


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
    melanoma sensitivity and referral share of the answers on them; and how many were
    reviewed as not a lesion (``not_a_lesion``)."""
    from skinlesion.review.store import NOT_A_LESION

    if records.empty or labels.empty:
        return []
    joined = records.merge(labels, on="image_sha256", how="inner")
    joined = joined[joined["dx"].isin([*CLASSES, NOT_A_LESION])]
    if joined.empty:
        return []
    stamps = pd.to_datetime(joined["time"], utc=True)
    joined["week"] = (stamps.dt.normalize() - pd.to_timedelta(stamps.dt.weekday, "D")).dt.date
    weeks = []
    for (week, version), rows in joined.groupby(["week", "model_version"], sort=True):
        lesions = rows[rows["dx"] != NOT_A_LESION]
        figures = _figures(lesions) if len(lesions) else {"labelled": 0}
        weeks.append(
            {
                "week": str(week),
                "model_version": str(version),
                **figures,
                "not_a_lesion": int((rows["dx"] == NOT_A_LESION).sum()),
            }
        )
    return weeks
