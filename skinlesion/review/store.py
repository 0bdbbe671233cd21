"""The review store: every answer a reviewer gave, in SQLite locally or the project's
PostgreSQL on the cluster (``review.store``, a SQLAlchemy URL).

Answers are only ever added. A second review of the same image is a row beside the first,
never an update of it: who said what, when and about which served answer stays on
record, and :func:`decisions` says per image whether the reviews agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from skinlesion.errors import SkinlesionError
from skinlesion.labels import CLASSES

NOT_A_LESION = "not_a_lesion"  # "not a lesion / unusable image": monitoring evidence only
ANSWERS = (*CLASSES, NOT_A_LESION)
DX_TYPES = ("histo", "follow_up", "consensus", "confocal")  # HAM10000's ways to confirm

_metadata = sa.MetaData()
REVIEWS = sa.Table(
    "reviews",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("image_sha256", sa.String(64), nullable=False, index=True),
    sa.Column("request_id", sa.String(200)),
    sa.Column("row", sa.Integer),
    sa.Column("logged_at", sa.String(32)),  # when the server answered
    sa.Column("model_uri", sa.String(500)),
    sa.Column("model_version", sa.String(50)),  # the version whose answer was shown
    sa.Column("answer", sa.String(20), nullable=False),  # a class, or not_a_lesion
    sa.Column("dx_type", sa.String(20)),  # how a diagnosis was confirmed; None otherwise
    sa.Column("reviewer", sa.String(200), nullable=False),
    sa.Column("reviewed_at", sa.String(32), nullable=False),
)


class ReviewError(SkinlesionError, ValueError):
    """An answer the store refuses; the message says which field and why."""


@dataclass(frozen=True)
class Review:
    """One reviewer's answer about one logged image."""

    image_sha256: str
    answer: str
    dx_type: str | None
    reviewer: str
    request_id: str | None = None
    row: int | None = None
    logged_at: str | None = None
    model_uri: str | None = None
    model_version: str | None = None
    reviewed_at: str = ""

    def checked(self) -> Review:
        """This answer, refused with a clear message when it is not one the data can take."""
        if self.answer not in ANSWERS:
            raise ReviewError(f"answer {self.answer!r}: one of {', '.join(ANSWERS)}")
        if self.answer == NOT_A_LESION and self.dx_type:
            raise ReviewError("'not a lesion' takes no dx_type")
        if self.answer != NOT_A_LESION and self.dx_type not in DX_TYPES:
            kinds = ", ".join(DX_TYPES)
            raise ReviewError(
                f"dx_type {self.dx_type!r}: a confirmed diagnosis needs one of {kinds}"
            )
        if not self.reviewer:
            raise ReviewError("an answer needs its reviewer")
        return self


class ReviewStore:
    """The reviews table behind ``url``, created when missing."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url, future=True)
        _metadata.create_all(self.engine)

    def add(self, review: Review) -> int:
        """Record ``review`` (stamped now unless it says when); its row id."""
        review = review.checked()
        values = {**review.__dict__}
        values["reviewed_at"] = review.reviewed_at or datetime.now(UTC).isoformat(
            timespec="seconds"
        )
        with self.engine.begin() as connection:
            return int(
                connection.execute(REVIEWS.insert().values(**values)).inserted_primary_key[0]
            )

    def all(self) -> list[dict[str, Any]]:
        """Every answer, oldest first."""
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(REVIEWS).order_by(REVIEWS.c.id))
            return [dict(r._mapping) for r in rows]

    def of_image(self, sha256: str) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(REVIEWS).where(REVIEWS.c.image_sha256 == sha256).order_by(REVIEWS.c.id)
            )
            return [dict(r._mapping) for r in rows]

    def reviewed(self) -> set[str]:
        """The images someone has answered for."""
        with self.engine.connect() as connection:
            return set(connection.execute(sa.select(REVIEWS.c.image_sha256).distinct()).scalars())

    def close(self) -> None:
        self.engine.dispose()


@dataclass(frozen=True)
class Decision:
    """Where the reviews of one image leave it: ``answer`` when they agree or the latest
    is a consensus, else None (held back until a consensus review is added beside them)."""

    image_sha256: str
    answer: str | None
    dx_type: str | None
    reviews: int
    latest: dict[str, Any]


def decisions(reviews: list[dict[str, Any]]) -> list[Decision]:
    """One decision per image: the agreed answer (with the latest review's ``dx_type``),
    or the latest review's when its ``dx_type`` is ``consensus`` (the reviewers settled
    it together), else None: reviewers disagree."""
    by_image: dict[str, list[dict[str, Any]]] = {}
    for review in reviews:
        by_image.setdefault(review["image_sha256"], []).append(review)
    out = []
    for sha, given in by_image.items():
        answers = {r["answer"] for r in given}
        latest = given[-1]
        settled = len(answers) == 1 or latest["dx_type"] == "consensus"
        agreed = latest["answer"] if settled else None
        out.append(Decision(sha, agreed, latest["dx_type"] if agreed else None, len(given), latest))
    return out
