"""Feedback labels: confirmed diagnoses of new lesions become a new data version, by the
same validation; a relabel is refused unless asked; the change check then says so."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from skinlesion.cli.main import command_line
from skinlesion.config.files import load_params
from skinlesion.data.catalog import load_catalog
from skinlesion.data.feedback import FeedbackError, add_labels
from skinlesion.data.synth import make_synthetic_dataset
from skinlesion.data.validation import InvalidDataError
from skinlesion.data.versions import data_version
from skinlesion.serving.prediction_log import read_records
from tests.helpers import ROOT

pytestmark = pytest.mark.data


@pytest.fixture
def clinic(tmp_path: Path) -> Path:
    """Three images of new lesions, as a clinic would send them back."""
    source = tmp_path / "new"
    make_synthetic_dataset(source, n_images=7, seed=99)
    out = tmp_path / "clinic"
    out.mkdir()
    for path in sorted(source.rglob("*.jpg"))[:3]:
        (out / f"photo-{path.stem[-3:]}.jpg").write_bytes(path.read_bytes())
    return out


def _settings():
    params = load_params(ROOT / "params.yaml")
    return params.validate_, params.data.workers


def test_new_lesions_become_a_new_data_version(synth_copy, clinic, tmp_path):
    before = data_version(synth_copy)
    photos = sorted(p.name for p in clinic.glob("*.jpg"))
    feedback = clinic / "feedback.csv"
    pd.DataFrame(
        {"image": photos, "dx": ["mel", "nv", "bcc"], "dx_type": ["histo"] * 3,
         "age": [55, 40, None], "sex": ["female", "male", None],
         "localization": ["back", "trunk", None]}
    ).to_csv(feedback, index=False)  # fmt: skip
    result = CliRunner().invoke(
        command_line(),
        ["data", "add-labels", str(feedback), "--to", str(synth_copy),
         "--params", str(ROOT / "params.yaml")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3 new image(s) of new lesions added" in result.output
    after = data_version(synth_copy)
    assert after != before
    catalog = load_catalog(synth_copy)
    added = catalog.tail(3)
    assert list(added["dx"]) == ["mel", "nv", "bcc"] and added["image_path"].notna().all()
    assert added["lesion_id"].str.match(r"^HAM_\d{7}$").all()
    # the same file again: nothing new, the version stays
    again = add_labels(feedback, synth_copy, *_settings())
    assert again.added == [] and len(again.skipped) == 3 and data_version(synth_copy) == after


def test_a_relabel_is_refused_unless_asked_and_reported(synth_copy, tmp_path):
    catalog = load_catalog(synth_copy)
    first = catalog.iloc[0]
    other = "df" if first["dx"] != "df" else "nv"
    feedback = tmp_path / "relabel.csv"
    pd.DataFrame(
        {"image": [str(synth_copy / first["image_path"])], "dx": [other], "dx_type": ["histo"]}
    ).to_csv(feedback, index=False)
    before = data_version(synth_copy)
    with pytest.raises(FeedbackError, match=r"relabel is refused unless asked"):
        add_labels(feedback, synth_copy, *_settings())
    assert data_version(synth_copy) == before
    result = add_labels(feedback, synth_copy, *_settings(), allow_relabel=True)
    assert result.relabelled == [first["image_id"]] and data_version(synth_copy) != before
    assert load_catalog(synth_copy).set_index("image_id").loc[first["image_id"], "dx"] == other


def test_an_existing_lesion_and_invalid_labels_change_nothing(synth_copy, clinic, tmp_path):
    photo = sorted(clinic.glob("*.jpg"))[0].name
    before = data_version(synth_copy)
    known = load_catalog(synth_copy)["lesion_id"].iloc[0]
    feedback = clinic / "f.csv"
    pd.DataFrame({"image": [photo], "lesion_id": [known], "dx": ["mel"], "dx_type": ["histo"]}
                 ).to_csv(feedback, index=False)  # fmt: skip
    with pytest.raises(FeedbackError, match="new lesions only"):
        add_labels(feedback, synth_copy, *_settings())
    pd.DataFrame({"image": [photo], "dx": ["melanoma"], "dx_type": ["histo"]}).to_csv(
        feedback, index=False
    )
    with pytest.raises(InvalidDataError, match="dx"):
        add_labels(feedback, synth_copy, *_settings())
    assert data_version(synth_copy) == before


def test_several_images_of_one_new_lesion_are_added_together(synth_copy, clinic):
    """HAM10000 and a clinic alike have several images of many lesions: they arrive in one
    file, under one new lesion, with one diagnosis."""
    photos = sorted(p.name for p in clinic.glob("*.jpg"))
    feedback = clinic / "same-lesion.csv"
    pd.DataFrame(
        {"image": photos[:2], "lesion_id": ["HAM_9900001"] * 2, "dx": ["mel", "mel"],
         "dx_type": ["histo"] * 2}
    ).to_csv(feedback, index=False)  # fmt: skip
    result = add_labels(feedback, synth_copy, *_settings())
    assert len(result.added) == 2 and result.new_version != result.old_version
    catalog = load_catalog(synth_copy).set_index("image_id")
    assert set(catalog.loc[result.added, "lesion_id"]) == {"HAM_9900001"}
    before = data_version(synth_copy)
    pd.DataFrame(
        {"image": photos[2:3] * 2, "lesion_id": ["HAM_9900002"] * 2, "dx": ["mel", "nv"],
         "dx_type": ["histo"] * 2}
    ).to_csv(feedback, index=False)  # fmt: skip
    with pytest.raises(FeedbackError, match="one lesion has one diagnosis"):
        add_labels(feedback, synth_copy, *_settings())
    assert data_version(synth_copy) == before


def test_images_are_found_in_the_prediction_log(synth_copy, clinic, tmp_path):
    photo = sorted(clinic.glob("*.jpg"))[1].read_bytes()
    log = tmp_path / "log" / "date=2026-12-01"
    log.mkdir(parents=True)
    records = [
        {"request_id": "req-7", "row": 0, "image_sha256": hashlib.sha256(photo).hexdigest(),
         "image": base64.b64encode(photo).decode(), "age": 61.0, "sex": "male",
         "localization": "face"},
        {"request_id": "req-8", "row": 0, "image_sha256": "ab" * 32, "image": None,
         "age": None, "sex": None, "localization": None},
    ]  # fmt: skip
    pd.DataFrame(records).to_parquet(log / "part-1.parquet")
    feedback = tmp_path / "fb.csv"
    pd.DataFrame({"request_id": ["req-7"], "dx": ["bcc"], "dx_type": ["histo"]}).to_csv(
        feedback, index=False
    )
    result = add_labels(feedback, synth_copy, *_settings(), log=read_records(str(tmp_path / "log")))
    row = load_catalog(synth_copy).set_index("image_id").loc[result.added[0]]
    assert row["dx"] == "bcc" and row["age"] == 61 and row["localization"] == "face"
    pd.DataFrame({"request_id": ["req-8"], "dx": ["bcc"], "dx_type": ["histo"]}).to_csv(
        feedback, index=False
    )
    with pytest.raises(FeedbackError, match=r"serve\.log_images was off"):
        add_labels(feedback, synth_copy, *_settings(), log=read_records(str(tmp_path / "log")))


def test_the_change_check_reports_the_new_version(synth_copy, clinic, tmp_path, monkeypatch):
    """A champion trained on the data before the feedback; afterwards the scheduled
    run's first check says the data changed, and which lesions are new."""
    from skinlesion.data.versions import list_folder, log_data_listing
    from skinlesion.promotion.changes import check_for_changes
    from skinlesion.provenance import run_provenance
    from tests.helpers import log_tiny_model

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = load_params(ROOT / "params.yaml")
    listing = list_folder(synth_copy, params.data.workers)
    with mlflow.start_run() as run:
        mlflow.set_tags(run_provenance(params, listing.version))
        log_data_listing(listing, synth_copy)
        info = log_tiny_model()
    client = mlflow.MlflowClient()
    version = mlflow.register_model(info.model_uri, params.promote.registered_model).version
    client.set_registered_model_alias(params.promote.registered_model, "champion", version)
    for key, value in client.get_run(run.info.run_id).data.tags.items():
        client.set_model_version_tag(params.promote.registered_model, version, key, value)
    name = params.promote.registered_model
    assert not check_for_changes(client, name, params, synth_copy).changed

    feedback = clinic / "feedback.csv"
    photos = sorted(p.name for p in clinic.glob("*.jpg"))
    pd.DataFrame({"image": photos, "dx": ["mel", "nv", "bcc"], "dx_type": ["histo"] * 3}
                 ).to_csv(feedback, index=False)  # fmt: skip
    add_labels(feedback, synth_copy, *_settings())
    check = check_for_changes(client, name, params, synth_copy)
    assert check.changed and "data.version" in check.reason
    assert "3" in check.data_changes
