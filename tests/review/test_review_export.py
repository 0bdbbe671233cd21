"""From answers to a data version: `review export` adds the agreed diagnoses through
`data add-labels` (images and patient fields from the log), keeps "not a lesion" out of
the data, holds disagreements back; realised accuracy counts the reviewed images."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from skinlesion.cli.main import command_line
from skinlesion.data.catalog import load_catalog
from skinlesion.data.synth import make_synthetic_dataset
from skinlesion.data.versions import data_version
from skinlesion.monitoring.realised import realised_accuracy, reviewed_labels
from skinlesion.review.store import NOT_A_LESION, Review, ReviewStore
from tests.helpers import ROOT

pytestmark = pytest.mark.data


@pytest.fixture
def referred_log(tmp_path: Path) -> tuple[Path, list[str]]:
    """A prediction log of four referred images of new lesions, bytes kept."""
    source = tmp_path / "new"
    make_synthetic_dataset(source, n_images=7, seed=77)
    rows, shas = [], []
    for n, path in enumerate(sorted(source.rglob("*.jpg"))[:4]):
        raw = path.read_bytes()
        shas.append(hashlib.sha256(raw).hexdigest())
        rows.append(
            {"time": "2026-12-01T10:00:00.000Z", "request_id": f"req-{n}", "row": 0,
             "model_uri": "models:/m/2", "model_version": "2", "image_sha256": shas[-1],
             "image": base64.b64encode(raw).decode(), "age": 40.0 + n, "sex": "male",
             "localization": "back", "prediction": "nv", "refer": True,
             "prediction_set": ["nv", "mel"], "refer_reason": "melanoma cannot be ruled out"}
        )  # fmt: skip
    folder = tmp_path / "log" / "date=2026-12-01"
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(folder / "part-1.parquet", index=False)
    return tmp_path / "log", shas


def test_export_adds_exactly_the_agreed_lesions(synth_copy, referred_log, tmp_path):
    log, shas = referred_log
    url = f"sqlite:///{tmp_path / 'reviews.db'}"
    store = ReviewStore(url)
    store.add(Review(shas[0], "mel", "histo", "alice"))
    store.add(Review(shas[1], "bcc", "follow_up", "alice"))
    store.add(Review(shas[1], "bcc", "histo", "bob"))  # a second review, agreeing
    store.add(Review(shas[2], NOT_A_LESION, None, "alice"))
    store.add(Review(shas[3], "nv", "histo", "alice"))
    store.add(Review(shas[3], "df", "histo", "bob"))  # disagreement: held back
    before = data_version(synth_copy)
    rows_before = len(load_catalog(synth_copy))
    command = ["review", "export", "--to", str(synth_copy), "--store", url, "--log", str(log),
               "--feedback", str(tmp_path / "feedback.csv"),
               "--params", str(ROOT / "params.yaml")]  # fmt: skip
    result = CliRunner().invoke(command_line(), command)
    assert result.exit_code == 0, result.output
    assert "2 confirmed diagnosis(es), 1 'not a lesion'" in result.output
    assert "1 held back" in result.output and "2 new image(s) of new lesions added" in result.output
    catalog = load_catalog(synth_copy)
    added = catalog.iloc[rows_before:]
    assert len(added) == 2 and data_version(synth_copy) != before
    assert sorted(zip(added["dx"], added["dx_type"], strict=True)) == [
        ("bcc", "histo"),
        ("mel", "histo"),
    ]
    assert sorted(added["age"]) == [40.0, 41.0]  # the patient fields of the log records
    feedback = pd.read_csv(tmp_path / "feedback.csv")
    assert set(feedback["image_sha256"]) == {shas[0], shas[1]}
    again = CliRunner().invoke(command_line(), command)  # harmless: nothing new
    assert "0 new image(s)" in again.output and len(load_catalog(synth_copy)) == rows_before + 2

    labels = reviewed_labels(url)
    records = pd.read_parquet(next(log.rglob("*.parquet")))
    [week] = realised_accuracy(records, labels)
    assert week["labelled"] == 2 and week["not_a_lesion"] == 1 and week["accuracy"] == 0.0
    assert reviewed_labels(f"sqlite:///{tmp_path / 'none.db'}").empty
