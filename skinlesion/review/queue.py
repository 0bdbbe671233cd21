"""The review queue: the referred images of a prediction-log window that no one has
answered for yet, most informative first.

**The order.** Cases whose prediction set holds melanoma come first: a missed melanoma
costs the most, and it is the class the project guards above all. Within each group, the
**informativeness** score, the mean of three terms in 0..1, decides, highest first:

* set size: ``(|set| - 1) / 6`` (an empty set, no class fits, counts as 1);
* margin: ``1 - (p1 - p2)``, one minus the gap between the two most probable classes;
* out-of-distribution distance: ``min(d / threshold, 2) / 2``, the feature distance to
  the training lesions in units of the model's referral threshold (0.5 at it, capped at
  twice it), 0 when the version gives none;

ties go to the older answer. The first two say how unsure the model is among the classes
it knows, the third how far the image is from what it was trained on: the answers a
confirmed diagnosis teaches the model most. A reviewer may filter by reason and date.

Each logged image is one case (by its SHA-256: an image sent twice is reviewed once, its
latest answer shown). Only records whose log kept the image (``serve.log_images``) can
be reviewed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from skinlesion.labels import CLASSES

# The kinds of referral a reason names (skinlesion.model.reliability), for the filter.
REASON_KINDS: dict[str, str] = {
    "melanoma": "melanoma cannot be ruled out",
    "wide_set": "classes cannot be ruled out",
    "empty_set": "no class fits",
    "out_of_distribution": "out of distribution",
    "input_contract": "input contract",
}
_DISTANCE = re.compile(r"feature distance ([0-9.]+) is above ([0-9.]+)")

# One version's out-of-distribution distance of embeddings (n x d) and its threshold.
DistanceOf = Callable[[str], tuple[Callable[[np.ndarray], np.ndarray], float] | None]


@dataclass(frozen=True)
class Case:
    """One referred image as the queue shows it."""

    image_sha256: str
    record: dict[str, Any]  # the latest log record of the image (image bytes included)
    prediction_set: list[str]
    probabilities: dict[str, float]
    margin: float
    ood_distance: float | None
    ood_threshold: float | None
    kinds: list[str]
    score: float
    melanoma_in_set: bool
    terms: dict[str, float] = field(default_factory=dict)

    @property
    def time(self) -> str:
        return str(self.record.get("time", ""))


def reason_kinds(reason: str | None) -> list[str]:
    """The kinds of :data:`REASON_KINDS` a ``refer_reason`` names."""
    text = reason or ""
    return [kind for kind, phrase in REASON_KINDS.items() if phrase in text]


def _distance_in_reason(reason: str | None) -> tuple[float, float] | None:
    found = _DISTANCE.search(reason or "")
    return (float(found[1]), float(found[2])) if found else None


def informativeness(
    set_size: int, margin: float, ood_distance: float | None, ood_threshold: float | None
) -> tuple[float, dict[str, float]]:
    """The score of the module's docstring, and its three terms."""
    k = len(CLASSES)
    size = 1.0 if set_size == 0 else (min(set_size, k) - 1) / (k - 1)
    ood = 0.0
    if ood_distance is not None and ood_threshold and math.isfinite(ood_distance):
        ood = min(ood_distance / ood_threshold, 2.0) / 2.0
    terms = {"set_size": size, "margin": 1.0 - margin, "ood": ood}
    return sum(terms.values()) / len(terms), terms


def _set_of(value: Any) -> list[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    return [str(c) for c in list(value)]


def _distances(
    records: list[dict[str, Any]], distance_of: DistanceOf | None
) -> list[tuple[float, float] | None]:
    """Each record's (distance, threshold) from its version's reliability and its logged
    embedding, one matrix product per version; None where either is missing."""
    found: list[tuple[float, float] | None] = [None] * len(records)
    if distance_of is None:
        return found
    by_version: dict[str, list[int]] = {}
    for n, record in enumerate(records):
        embedding = record.get("embedding")
        if embedding is not None and len(embedding):
            by_version.setdefault(str(record.get("model_uri") or ""), []).append(n)
    for uri, rows in by_version.items():
        scorer = distance_of(uri)
        if scorer is None:
            continue
        score_of, threshold = scorer
        matrix = np.asarray([records[n]["embedding"] for n in rows], dtype="float64")
        for n, distance in zip(rows, score_of(matrix), strict=True):
            found[n] = (float(distance), threshold)
    return found


def build_queue(
    records: pd.DataFrame,
    reviewed: set[str],
    distance_of: DistanceOf | None = None,
    kind: str | None = None,
) -> list[Case]:
    """The queue of ``records`` (a window of the prediction log): referred, with the image
    kept, not in ``reviewed``, of reason ``kind`` if given, in the documented order.
    ``distance_of(model_uri)`` gives a version's distance function and threshold (from its
    reliability), to score the logged embeddings; without it, or for a version that
    gives none, the distance named in the refer reason is used, if any."""
    if records.empty or "image" not in records.columns:
        return []
    keep = records["refer"].fillna(False).astype(bool) & records["image"].notna()
    pending = records[keep & ~records["image_sha256"].isin(reviewed)]
    pending = pending.drop_duplicates("image_sha256", keep="last")
    records_ = pending.to_dict("records")
    distances = _distances(records_, distance_of)
    cases = []
    for record, scored in zip(records_, distances, strict=True):
        kinds = reason_kinds(record.get("refer_reason"))
        if kind and kind not in kinds:
            continue
        probs = {c: float(record.get(c) or 0.0) for c in CLASSES}
        top = sorted(probs.values(), reverse=True)
        margin = top[0] - top[1]
        found = scored or _distance_in_reason(record.get("refer_reason"))
        distance, threshold = found if found else (None, None)
        sets = _set_of(record.get("prediction_set"))
        score, terms = informativeness(len(sets), margin, distance, threshold)
        cases.append(
            Case(
                image_sha256=str(record["image_sha256"]),
                record=record,
                prediction_set=sets,
                probabilities=probs,
                margin=margin,
                ood_distance=distance,
                ood_threshold=threshold,
                kinds=kinds,
                score=score,
                melanoma_in_set="mel" in sets,
                terms=terms,
            )
        )
    return sorted(cases, key=lambda c: (not c.melanoma_in_set, -c.score, c.time))
