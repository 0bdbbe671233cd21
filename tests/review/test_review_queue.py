"""The queue's order, as documented in skinlesion.review.queue: melanoma in the set first,
then the informativeness score (set size, margin, out-of-distribution distance), older
first on ties; only referred images whose bytes were kept, none already reviewed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skinlesion.labels import CLASSES
from skinlesion.review.queue import build_queue, informativeness, reason_kinds

pytestmark = pytest.mark.code


def _record(sha: str, probs: dict[str, float], sets: list[str], reason: str, **extra) -> dict:
    row = {c: probs.get(c, 0.0) for c in CLASSES}
    return {
        "time": extra.pop("time", "2026-12-01T10:00:00.000Z"),
        "image_sha256": sha,
        "request_id": "r",
        "row": 0,
        "model_uri": "models:/m/1",
        "model_version": "1",
        "prediction": max(row, key=row.get),
        "prediction_set": sets,
        "refer": extra.pop("refer", True),
        "refer_reason": reason,
        "image": extra.pop("image", "aW1hZ2U="),
        "embedding": extra.pop("embedding", None),
        **row,
    }


def test_the_score_is_the_mean_of_its_three_terms():
    score, terms = informativeness(7, 0.0, 20.0, 10.0)
    assert terms == {"set_size": 1.0, "margin": 1.0, "ood": 1.0} and score == 1.0
    score, terms = informativeness(1, 1.0, None, None)
    assert score == 0.0
    assert informativeness(0, 0.5, 5.0, 10.0)[1] == {"set_size": 1.0, "margin": 0.5, "ood": 0.25}
    assert informativeness(3, 0.2, 10.0, 10.0)[0] == pytest.approx((2 / 6 + 0.8 + 0.5) / 3)


def test_reasons_are_sorted_into_kinds():
    reason = (
        "out of distribution: feature distance 31.0 is above 25.0, beyond the training lesions; "
        "3 classes cannot be ruled out at 90%; melanoma cannot be ruled out"
    )
    assert reason_kinds(reason) == ["melanoma", "wide_set", "out_of_distribution"]
    assert reason_kinds("no class fits at this confidence (empty prediction set)") == ["empty_set"]
    assert reason_kinds(None) == []


def test_melanoma_first_then_the_most_informative_then_the_oldest():
    wide = {"nv": 0.4, "bkl": 0.35, "df": 0.25}
    records = pd.DataFrame(
        [
            _record("a", {"nv": 0.9, "bkl": 0.1}, ["nv", "bkl"], "2 classes cannot be ruled out"),
            _record("b", wide, ["nv", "bkl", "df"], "3 classes cannot be ruled out"),
            _record("c", {"mel": 0.6, "nv": 0.4}, ["mel", "nv"], "melanoma cannot be ruled out"),
            _record("d", {"nv": 0.9}, ["nv"], "", refer=False),  # answered: not in the queue
            _record("e", wide, ["nv", "bkl", "df"], "3 classes", image=None),  # no bytes kept
            _record("f", wide, ["nv", "bkl", "df"], "3 classes", time="2026-11-30T09:00:00Z"),
            _record("g", {"mel": 0.95, "nv": 0.05}, ["mel"], "melanoma cannot be ruled out"),
            _record("h", wide, ["nv", "bkl", "df"], "3 classes cannot be ruled out"),
        ]
    )
    queue = build_queue(records, reviewed={"h"})
    assert [c.image_sha256 for c in queue] == ["c", "g", "f", "b", "a"]
    scores = [c.score for c in queue]
    assert scores[0] > scores[1] and scores[2] == scores[3] > scores[4]


def test_the_distance_comes_from_the_version_else_from_the_reason():
    reason = "out of distribution: feature distance 30.0 is above 20.0, beyond the training lesions"
    records = pd.DataFrame(
        [
            _record("x", {"nv": 0.5, "bkl": 0.5}, ["nv", "bkl"], reason, embedding=[3.0, 4.0]),
            _record("y", {"nv": 0.5, "bkl": 0.5}, ["nv", "bkl"], reason),
        ]
    )
    by_norm = (lambda e: np.linalg.norm(e, axis=1), 10.0)
    cases = {c.image_sha256: c for c in build_queue(records, set(), lambda uri: by_norm)}
    assert cases["x"].ood_distance == pytest.approx(5.0) and cases["x"].terms["ood"] == 0.25
    without = {c.image_sha256: c for c in build_queue(records, set(), lambda uri: None)}
    assert without["y"].ood_distance == 30.0 and without["y"].terms["ood"] == 0.75


def test_the_filter_keeps_one_kind_and_an_image_sent_twice_is_one_case():
    records = pd.DataFrame(
        [
            _record("a", {"mel": 0.5, "nv": 0.5}, ["mel", "nv"], "melanoma cannot be ruled out"),
            _record("b", {"nv": 0.5, "bkl": 0.5}, ["nv", "bkl"], "2 classes cannot be ruled out"),
            _record("b", {"nv": 0.6, "bkl": 0.4}, ["nv", "bkl"], "2 classes cannot be ruled out",
                    time="2026-12-02T10:00:00Z"),
        ]
    )  # fmt: skip
    assert [c.image_sha256 for c in build_queue(records, set(), kind="melanoma")] == ["a"]
    [b] = build_queue(records, set(), kind="wide_set")
    assert b.probabilities["nv"] == 0.6  # the latest answer
