"""The prediction log's writer and records, without a server: rotation into Parquet, a
failing sink and a full queue that drop and count but never block, the records."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from PIL import Image

from skinlesion.labels import CLASSES
from skinlesion.serving.log_records import (
    ask_embeddings,
    request_payload,
    request_rows,
    take_records,
)
from skinlesion.serving.prediction_log import PredictionLog, folder_sink

pytestmark = pytest.mark.code


def _records(n: int) -> list[dict]:
    return [{"request_id": f"r{i}", "prediction": "nv", "embedding": [0.5, 1.0]} for i in range(n)]


def test_records_are_rotated_into_parquet_files(tmp_path: Path):
    log = PredictionLog(folder_sink(tmp_path), rotate_records=10, rotate_seconds=30)
    log.put(_records(25))
    log.close()
    files = sorted(tmp_path.rglob("*.parquet"))
    assert len(files) == 3 and all(f.parent.name.startswith("date=") for f in files)
    table = pd.concat(pd.read_parquet(f) for f in files)
    assert sorted(table["request_id"]) == sorted(f"r{i}" for i in range(25))
    assert log.stats() == {"logged": 25, "written": 25, "dropped": 0, "failed_writes": 0,
                           "files": 3}  # fmt: skip


def test_a_failing_sink_drops_and_counts_and_put_never_waits():
    """The sink hangs, then fails: ``put`` returns while the writer is still stuck (it
    never waits for the sink or for room in the queue)."""
    import threading

    release = threading.Event()

    def broken(data: bytes, name: str) -> None:
        release.wait(60)
        raise OSError("disk full")

    log = PredictionLog(broken, rotate_records=5, rotate_seconds=30, max_queue=8)
    putting = threading.Thread(target=log.put, args=(_records(100),))
    putting.start()
    putting.join(30)  # a guard against a hang, not a timing: put must not wait for the sink
    returned_while_stuck = not putting.is_alive() and not release.is_set()
    release.set()
    assert returned_while_stuck
    log.close()
    stats = log.stats()
    assert stats["written"] == 0 and stats["failed_writes"] >= 1
    assert stats["dropped"] == 100  # every record lost is counted, queued or not


def _jpeg(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (150, 100, 90)).save(buffer, format="JPEG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_request_rows_take_the_pandas_forms_only():
    def rows(body: bytes):
        payload = request_payload(body)
        return None if payload is None else request_rows(payload)

    assert rows(b'{"dataframe_records": [{"image": "x", "age": 4}]}') == [{"image": "x", "age": 4}]
    split = {"dataframe_split": {"columns": ["image", "sex"], "data": [["x", "male"]]}}
    assert rows(json.dumps(split).encode()) == [{"image": "x", "sex": "male"}]
    assert rows(b'{"instances": [1]}') is None
    assert rows(b"not json") is None
    assert rows(b"[1, 2]") is None
    body, by_client = ask_embeddings({"dataframe_records": [], "params": {"a": 1}})
    assert json.loads(body)["params"] == {"a": 1, "embedding": True} and not by_client
    assert ask_embeddings({"dataframe_records": [], "params": {"embedding": True}})[1]


def test_records_hold_the_image_facts_and_the_answer_but_not_the_image():
    rows = [{"image": _jpeg(200, 150), "age": "61", "sex": " Male", "localization": None}]
    answer = {
        "predictions": [
            {"prediction": "mel", "prediction_set": ["mel", "nv"], "refer": True,
             "refer_reason": "melanoma cannot be ruled out", "embedding": [0.25, 0.5],
             **{c: 1 / 7 for c in CLASSES}}
        ]
    }  # fmt: skip
    served = SimpleNamespace(uri="models:/m/3", version="3")
    body, records = take_records(json.dumps(answer).encode(), rows, served, "req-1", 0.5, False)
    assert "embedding" not in json.loads(body)["predictions"][0]  # the client never sees it
    [record] = records
    assert record["image_width"] == 200 and record["image_height"] == 150
    assert len(record["image_sha256"]) == 64 and record["image_bytes"] > 0
    assert record["age"] == 61.0 and record["sex"] == "male" and record["localization"] is None
    assert record["embedding"] == [0.25, 0.5] and record["model_version"] == "3"
    assert record["time"] == "1970-01-01T00:00:00.500Z" and "image" not in record
    _, with_image = take_records(json.dumps(answer).encode(), rows, served, "req-1", 0.5, True)
    assert with_image[0]["image"] == rows[0]["image"]


def test_log_images_referred_keeps_the_bytes_of_referred_answers_only():
    rows = [{"image": _jpeg(200, 150)}, {"image": _jpeg(120, 90)}]
    answer = {
        "predictions": [
            {"prediction": "nv", "prediction_set": ["nv", "mel"], "refer": True,
             "refer_reason": "melanoma cannot be ruled out", **{c: 1 / 7 for c in CLASSES}},
            {"prediction": "nv", "prediction_set": ["nv"], "refer": False, "refer_reason": "",
             **{c: 1 / 7 for c in CLASSES}},
        ]
    }  # fmt: skip
    served = SimpleNamespace(uri="models:/m/3", version="3")
    _, records = take_records(json.dumps(answer).encode(), rows, served, "r", 0.5, "referred")
    assert records[0]["image"] == rows[0]["image"] and "image" not in records[1]


def _logged_day(root: Path, day: str, images: list[str | None]) -> Path:
    """A part file of ``day`` with one record per image, logged at noon."""
    path = root / f"date={day}" / f"part-{day}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {"time": [f"{day}T12:00:00.000Z"] * len(images), "request_id": ["r"] * len(images),
         "row": range(len(images)), "image": images}
    ).to_parquet(path, index=False)  # fmt: skip
    return path


def test_the_retention_step_deletes_old_image_bytes_and_keeps_the_records(tmp_path: Path):
    """`prune-log`: images older than the retention are emptied, their records stay; a
    newer image is kept; running it again changes nothing."""
    from typer.testing import CliRunner

    from skinlesion.cli.main import command_line
    from skinlesion.serving.prediction_log import prune_images, read_records

    today = pd.Timestamp.now(tz="UTC")
    old_day = (today - pd.Timedelta(days=100)).strftime("%Y-%m-%d")
    new_day = (today - pd.Timedelta(days=2)).strftime("%Y-%m-%d")
    _logged_day(tmp_path, old_day, ["b2xk", None, "b2xk"])
    _logged_day(tmp_path, new_day, ["bmV3"])
    result = CliRunner().invoke(
        command_line(), ["prune-log", "--log-uri", str(tmp_path), "--days", "90"]
    )
    assert result.exit_code == 0, result.output
    assert "2 image(s) logged before" in result.output and "records are kept" in result.output
    records = read_records(str(tmp_path)).sort_values("time")
    assert len(records) == 4  # every record kept
    assert records["image"].isna().sum() == 3 and records["image"].iloc[-1] == "bmV3"
    again = prune_images(str(tmp_path), today - pd.Timedelta(days=90))
    assert again.images_deleted == 0 and again.files_rewritten == 0
