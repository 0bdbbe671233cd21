"""The review store on SQLite and on a real PostgreSQL: answers are only ever added (a
second review stands beside the first), refused when the data could not take them, and
settled per image by agreement or a consensus review."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from skinlesion.review.store import NOT_A_LESION, Review, ReviewError, ReviewStore, decisions
from tests.helpers import running_postgres

pytestmark = pytest.mark.code


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store(request, tmp_path: Path) -> Iterator[ReviewStore]:
    if request.param == "sqlite":
        opened = ReviewStore(f"sqlite:///{tmp_path / 'reviews.db'}")
        yield opened
        opened.close()
        return
    with running_postgres() as url:
        opened = ReviewStore(url)
        yield opened
        opened.close()


def _review(sha: str, answer: str, dx_type: str | None, reviewer: str) -> Review:
    return Review(sha, answer, dx_type, reviewer, request_id="r1", row=0, model_version="3")


def test_a_second_review_stands_beside_the_first(store: ReviewStore):
    first = store.add(_review("a" * 64, "mel", "histo", "alice"))
    second = store.add(_review("a" * 64, "nv", "follow_up", "bob"))
    assert second != first
    kept = store.of_image("a" * 64)
    assert [(r["reviewer"], r["answer"]) for r in kept] == [("alice", "mel"), ("bob", "nv")]
    assert all(r["model_version"] == "3" and r["reviewed_at"] for r in kept)
    assert store.reviewed() == {"a" * 64}


def test_answers_the_data_cannot_take_are_refused(store: ReviewStore):
    with pytest.raises(ReviewError, match="answer 'melanoma'"):
        store.add(_review("b" * 64, "melanoma", "histo", "alice"))
    with pytest.raises(ReviewError, match="needs one of histo"):
        store.add(_review("b" * 64, "mel", None, "alice"))
    with pytest.raises(ReviewError, match="takes no dx_type"):
        store.add(_review("b" * 64, NOT_A_LESION, "histo", "alice"))
    assert store.all() == []


def test_decisions_need_agreement_or_a_consensus(store: ReviewStore):
    store.add(_review("1" * 64, "bcc", "histo", "alice"))
    store.add(_review("1" * 64, "bcc", "follow_up", "bob"))  # agree: the latest dx_type
    store.add(_review("2" * 64, "mel", "histo", "alice"))
    store.add(_review("2" * 64, "nv", "histo", "bob"))  # disagree: held back
    store.add(_review("3" * 64, "mel", "histo", "alice"))
    store.add(_review("3" * 64, "nv", "histo", "bob"))
    store.add(_review("3" * 64, "mel", "consensus", "carol"))  # settled together
    store.add(_review("4" * 64, NOT_A_LESION, None, "alice"))
    settled = {d.image_sha256[0]: (d.answer, d.dx_type, d.reviews) for d in decisions(store.all())}
    assert settled == {
        "1": ("bcc", "follow_up", 2),
        "2": (None, None, 2),
        "3": ("mel", "consensus", 3),
        "4": (NOT_A_LESION, None, 1),
    }
