"""`skinlesion review export --to DATA`: the confirmed answers of the review store become
a new data version, through `skinlesion data add-labels` (the same checks, the same
validation).

Per image, the reviews' decision (:func:`skinlesion.review.store.decisions`):

* an agreed diagnosis becomes a row of the feedback file (``image_sha256``, ``dx``,
  ``dx_type`` and the patient fields of its log record), whose image add-labels finds in
  the prediction log;
* "not a lesion / unusable image" never becomes training data: it stays in the store as
  monitoring evidence (`skinlesion monitor --labels` counts it);
* reviewers who disagree hold the image back until a consensus review settles it.

Exporting again is harmless: images already in the data with the same diagnosis are
skipped by add-labels.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from skinlesion.config.schema import ValidationSettings
from skinlesion.data.feedback import FeedbackResult, add_labels
from skinlesion.review.store import NOT_A_LESION, ReviewStore, decisions


@dataclass
class Exported:
    """What an export did: the feedback rows it wrote, what it kept out, and add-labels'
    own result."""

    confirmed: int = 0
    not_a_lesion: int = 0
    disagreed: list[str] = field(default_factory=list)
    feedback: FeedbackResult | None = None

    def describe(self) -> str:
        held = f", {len(self.disagreed)} held back (reviewers disagree)" if self.disagreed else ""
        added = self.feedback.describe() if self.feedback else "nothing to add"
        return (
            f"{self.confirmed} confirmed diagnosis(es), {self.not_a_lesion} 'not a lesion' "
            f"kept as monitoring evidence{held}: {added}"
        )


def feedback_rows(store: ReviewStore) -> tuple[pd.DataFrame, Exported]:
    """The feedback file's rows of every agreed diagnosis, and the counts of the rest."""
    exported = Exported()
    rows = []
    for decision in decisions(store.all()):
        if decision.answer is None:
            exported.disagreed.append(decision.image_sha256)
        elif decision.answer == NOT_A_LESION:
            exported.not_a_lesion += 1
        else:
            rows.append(
                {
                    "image_sha256": decision.image_sha256,
                    "dx": decision.answer,
                    "dx_type": decision.dx_type,
                }
            )
    exported.confirmed = len(rows)
    return pd.DataFrame(rows, columns=["image_sha256", "dx", "dx_type"]), exported


def export_reviews(
    store: ReviewStore,
    records: pd.DataFrame,
    data_dir: str | Path,
    settings: ValidationSettings,
    workers: int,
    feedback_file: str | Path | None = None,
) -> Exported:
    """Add the agreed diagnoses of ``store`` to ``data_dir`` through add-labels, their
    images and patient fields found in ``records`` (the prediction log). The feedback file
    is written to ``feedback_file`` when given (kept for the record), else to a
    temporary one. Only records that kept the image are searched (add-labels takes the
    latest record of an image, which may be a later, unreferred answer without it)."""
    rows, exported = feedback_rows(store)
    if rows.empty:
        return exported
    if "image" in records.columns:  # an image sent again unreferred: its bytes are elsewhere
        records = records[records["image"].notna()]
    with tempfile.TemporaryDirectory() as folder:
        target = Path(feedback_file) if feedback_file else Path(folder) / "feedback.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        rows.to_csv(target, index=False)
        exported.feedback = add_labels(target, data_dir, settings, workers, records)
    return exported
