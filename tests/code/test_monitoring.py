"""The monitor's parts without a model: Evidently's drift tests on synthetic traffic, the
prediction log read by window (folder and S3), the window's defaults, and the realised
accuracy of answers whose diagnoses came back."""

from __future__ import annotations

import io

import boto3
import numpy as np
import pandas as pd
import pytest

from skinlesion.labels import CLASSES
from skinlesion.monitoring.drift import check_drift, monitored_columns
from skinlesion.monitoring.monitor import MonitorError, window
from skinlesion.monitoring.realised import realised_accuracy
from skinlesion.serving.prediction_log import read_records

pytestmark = pytest.mark.code
SITES = ["back", "lower extremity", "trunk", "face", "upper extremity"]


def traffic(n: int, seed: int, age_shift: float = 0, feature_shift: float = 0) -> pd.DataFrame:
    """Log-like records: patient fields, decisions, probabilities, 32-d embeddings."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(len(CLASSES), 0.6), size=n)
    features = rng.normal(0, 1, (n, 32))
    features[:, :4] += feature_shift
    table = pd.DataFrame(probs, columns=list(CLASSES))
    return table.assign(
        age=(rng.normal(50, 15, n) + age_shift).round(-1),
        sex=rng.choice(["male", "female", None], n, p=[0.5, 0.45, 0.05]),
        localization=rng.choice(SITES, n),
        prediction=[CLASSES[i] for i in probs.argmax(axis=1)],
        embedding=list(features),
    )


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return monitored_columns(traffic(1200, seed=0))


@pytest.fixture
def monitor(settings):
    """params' monitor section with thresholds for these synthetic distributions (the
    real ones were measured on HAM10000 traffic: bench/monitor_replay.py)."""
    drift = {c: t.model_copy(update={"threshold": 0.25}) for c, t in settings.monitor.drift.items()}
    embedding = settings.monitor.embedding.model_copy(update={"threshold": 0.65})
    return settings.monitor.model_copy(update={"drift": drift, "embedding": embedding})


def test_traffic_like_the_reference_fires_no_test(reference, monitor):
    result = check_drift(monitored_columns(traffic(300, seed=1)), reference, monitor, render=False)
    assert [c.name for c in result.checks] == [*monitor.drift, "embedding"]
    assert not result.fired, [c.describe() for c in result.fired]


def test_older_patients_and_other_images_fire_their_tests(reference, monitor):
    shifted = traffic(300, seed=2, age_shift=25, feature_shift=1.0)
    result = check_drift(monitored_columns(shifted), reference, monitor, render=False)
    assert {c.name for c in result.fired} == {"age", "embedding"}
    assert "above its threshold" in next(c for c in result.fired if c.name == "age").describe()


def test_the_report_renders_evidently_html(monitor, tmp_path):
    small = monitored_columns(traffic(200, seed=4))  # the embeddings' t-SNE map: small
    result = check_drift(monitored_columns(traffic(100, seed=3)), small, monitor)
    page = result.save_html(tmp_path / "report.html").read_text()
    assert "Value Drift for column age" in page and "Drift in embeddings" in page


def _log_part(records: pd.DataFrame) -> bytes:
    data = io.BytesIO()
    records.to_parquet(data, index=False)
    return data.getvalue()


def _days() -> dict[str, pd.DataFrame]:
    """Three days of records, two per day, as the server's writer names its files."""
    out = {}
    for day in ("2026-11-20", "2026-11-23", "2026-11-26"):
        out[f"date={day}/part-{day.replace('-', '')}T000000-abcd.parquet"] = pd.DataFrame(
            {"time": [f"{day}T08:00:00.000Z", f"{day}T20:30:00.000Z"], "request_id": ["a", "b"]}
        )
    return out


def test_the_log_is_read_by_window_from_a_folder(tmp_path):
    for name, records in _days().items():
        (tmp_path / name).parent.mkdir(parents=True)
        (tmp_path / name).write_bytes(_log_part(records))
    since, until = pd.Timestamp("2026-11-20T12:00Z"), pd.Timestamp("2026-11-26T12:00Z")
    found = read_records(str(tmp_path), since, until)
    assert list(found["time"]) == [
        "2026-11-20T20:30:00.000Z",
        "2026-11-23T08:00:00.000Z",
        "2026-11-23T20:30:00.000Z",
        "2026-11-26T08:00:00.000Z",
    ]
    assert len(read_records(str(tmp_path))) == 6
    assert read_records(str(tmp_path / "none")).empty


@pytest.mark.integration  # a moto S3 server
def test_the_log_is_read_by_window_from_s3(s3_env):
    client = boto3.client("s3")
    client.create_bucket(Bucket="logs")
    for name, records in _days().items():
        client.put_object(Bucket="logs", Key=f"prediction-log/{name}", Body=_log_part(records))
    found = read_records(
        "s3://logs/prediction-log/",
        pd.Timestamp("2026-11-23T00:00Z"),
        pd.Timestamp("2026-11-24T00:00Z"),
    )
    assert list(found["time"]) == ["2026-11-23T08:00:00.000Z", "2026-11-23T20:30:00.000Z"]


def test_the_window_defaults_to_the_last_days():
    now = pd.Timestamp("2026-12-01T06:00Z")
    assert window(None, None, 7, now) == (pd.Timestamp("2026-11-24T06:00Z"), now)
    assert window("2026-11-01", "2026-11-08T00:00+01:00", 7) == (
        pd.Timestamp("2026-11-01T00:00Z"),
        pd.Timestamp("2026-11-07T23:00Z"),
    )
    with pytest.raises(MonitorError, match="not a date"):
        window("last week", None, 7)
    with pytest.raises(MonitorError, match="not before"):
        window("2026-11-08", "2026-11-01", 7)


def test_realised_accuracy_is_reported_by_week_and_version():
    records = pd.DataFrame(
        {
            "time": ["2026-11-24T10Z", "2026-11-25T10Z", "2026-12-01T10Z", "2026-12-01T11Z"],
            "model_version": ["3", "3", "4", "4"],
            "image_sha256": ["a", "b", "c", "d"],
            "prediction": ["mel", "nv", "bcc", "nv"],
            "refer": [True, False, False, True],
        }
    )  # fmt: skip
    labels = pd.DataFrame({"image_sha256": ["a", "b", "c", "x"], "dx": ["mel", "bkl", "bcc", "nv"]})
    weeks = realised_accuracy(records, labels)
    assert [(w["week"], w["model_version"], w["labelled"]) for w in weeks] == [
        ("2026-11-23", "3", 2),
        ("2026-11-30", "4", 1),
    ]
    assert weeks[0]["accuracy"] == 0.5 and weeks[0]["melanoma_sensitivity"] == 1.0
    assert weeks[0]["referred"] == 0.5 and weeks[0]["answered_accuracy"] == 0.0
    assert realised_accuracy(records, labels.iloc[:0]) == []
