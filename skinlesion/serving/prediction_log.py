"""The prediction log: every answered request, written off the request path.

What a team needs to know later what the champion saw and said: per image the time, the
request id, the model version, the image's SHA-256, bytes and pixel size, the patient
fields, the probabilities, the decision, the prediction set and referral, and a compact
embedding (the pooled image features at float16 precision) for drift monitoring. No
image bytes unless ``serve.log_images`` is set: images of patients' skin are health data.

The request path only puts records on a bounded queue (:meth:`PredictionLog.put`, never
blocking); a background thread gathers them and writes a Parquet file every
``rotate_records`` records or ``rotate_seconds`` seconds, to a folder
(``<uri>/date=YYYY-MM-DD/…parquet``) or under an S3 prefix. A full queue or a sink that
fails drops records, counts them (:meth:`PredictionLog.stats`) and logs a warning at most
once a minute: a log that cannot keep up never fails or slows a request.
"""

from __future__ import annotations

import contextlib
import io
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
WARN_EVERY_SECONDS = 60.0


def _part_name(now: float) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    return f"date={day}/part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"


def folder_sink(root: str | Path) -> Callable[[bytes, str], None]:
    """Write each Parquet file under a local folder (atomically: whole or absent)."""
    base = Path(root)

    def write(data: bytes, name: str) -> None:
        target = base / name
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_suffix(".tmp")
        temporary.write_bytes(data)
        temporary.replace(target)

    return write


def s3_sink(uri: str) -> Callable[[bytes, str], None]:
    """Write each Parquet file under an ``s3://bucket/prefix``."""
    from skinlesion.data.storage import s3_client, split_uri

    bucket, prefix = split_uri(uri)
    client = s3_client()

    def write(data: bytes, name: str) -> None:
        client.put_object(Bucket=bucket, Key=prefix + name, Body=data)

    return write


def sink_for(uri: str) -> Callable[[bytes, str], None]:
    return s3_sink(uri) if uri.startswith("s3://") else folder_sink(uri)


@dataclass
class PredictionLog:
    """A bounded queue of records and the thread that writes them (see the module)."""

    write: Callable[[bytes, str], None]
    rotate_records: int = 1000
    rotate_seconds: float = 60.0
    max_queue: int = 10000
    records: queue.Queue = field(init=False)
    counts: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.records = queue.Queue(maxsize=self.max_queue)
        self.counts = {"logged": 0, "written": 0, "dropped": 0, "failed_writes": 0, "files": 0}
        self._lock = threading.Lock()
        self._warned = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def put(self, records: list[dict[str, Any]]) -> None:
        """Queue ``records`` without waiting; what does not fit is dropped and counted."""
        for record in records:
            try:
                self.records.put_nowait(record)
            except queue.Full:
                self._drop(1, "the prediction log's queue is full")
            else:
                self._count("logged", 1)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued and stop the thread."""
        self._stop.set()
        self._thread.join(timeout)

    def _count(self, key: str, n: int) -> None:
        with self._lock:
            self.counts[key] += n

    def _drop(self, n: int, why: str) -> None:
        self._count("dropped", n)
        now = time.monotonic()
        if now - self._warned > WARN_EVERY_SECONDS:
            self._warned = now
            log.warning("%s: %d prediction log record(s) dropped (%s)", why, n, self.stats())

    def _run(self) -> None:
        buffer: list[dict[str, Any]] = []
        started = time.monotonic()
        while True:
            stopping = self._stop.is_set()
            with contextlib.suppress(queue.Empty):
                buffer.append(self.records.get(timeout=0.2))
            if len(buffer) >= self.rotate_records or (
                buffer and time.monotonic() - started >= self.rotate_seconds
            ):
                self._flush(buffer)
                buffer = []
                started = time.monotonic()
            if stopping and self.records.empty():
                break
        if buffer:
            self._flush(buffer)

    def _flush(self, buffer: list[dict[str, Any]]) -> None:
        try:
            data = io.BytesIO()
            pd.DataFrame(buffer).to_parquet(data, index=False)
            self.write(data.getvalue(), _part_name(time.time()))
        except Exception as err:  # any sink error: the records are lost, the server is not
            self._count("failed_writes", 1)
            self._drop(
                len(buffer), f"writing the prediction log failed ({type(err).__name__}: {err})"
            )
        else:
            self._count("written", len(buffer))
            self._count("files", 1)


def _day_of(name: str) -> str | None:
    """The ``YYYY-MM-DD`` of a part file's ``date=`` folder, if it has one."""
    for part in name.split("/"):
        if part.startswith("date="):
            return part.removeprefix("date=")
    return None


@dataclass(frozen=True)
class _Part:
    """One part file of a log: its name under the log's root, and how to read it."""

    name: str
    read: Callable[[], bytes]


def _parts(uri: str, first: str = "", last: str = "9999") -> list[_Part]:
    """The part files of a log (a folder or an ``s3://`` prefix) whose day folder lies in
    [``first``, ``last``] (a file without one is always taken), in name order."""

    def wanted(name: str) -> bool:
        day = _day_of(name)
        return name.endswith(".parquet") and (day is None or first <= day <= last)

    if uri.startswith("s3://"):
        from skinlesion.data.storage import s3_client, split_uri

        bucket, prefix = split_uri(uri)
        client = s3_client()
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, StartAfter=f"{prefix}date={first}" if first else ""
        )  # keys sort by day: the listing starts at the window's first one
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        return [
            _Part(
                key[len(prefix) :],
                lambda k=key: client.get_object(Bucket=bucket, Key=k)["Body"].read(),
            )
            for key in keys
            if wanted(key[len(prefix) :])
        ]
    root = Path(uri)
    files = sorted(root.rglob("*.parquet")) if root.is_dir() else []
    named = [(f.relative_to(root).as_posix(), f) for f in files]
    return [_Part(name, f.read_bytes) for name, f in named if wanted(name)]


def read_records(
    uri: str, since: pd.Timestamp | None = None, until: pd.Timestamp | None = None
) -> pd.DataFrame:
    """The records of a prediction log (a folder or an ``s3://`` prefix) whose ``time``
    lies in [``since``, ``until``), as written; files are picked by their day folder
    first, so a window reads only its days. Empty when nothing matches."""
    first = since.strftime("%Y-%m-%d") if since is not None else ""
    last = until.strftime("%Y-%m-%d") if until is not None else "9999"
    tables = [pd.read_parquet(io.BytesIO(part.read())) for part in _parts(uri, first, last)]
    if not tables:
        return pd.DataFrame()
    records = pd.concat(tables, ignore_index=True)
    if since is None and until is None:
        return records
    stamps = pd.to_datetime(records["time"], utc=True)
    keep = np.ones(len(records), dtype=bool)
    if since is not None:
        keep &= (stamps >= since).to_numpy()
    if until is not None:
        keep &= (stamps < until).to_numpy()
    return records[keep].sort_values("time", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class Pruned:
    """What :func:`prune_images` did: files read and rewritten, image bytes deleted."""

    files_read: int
    files_rewritten: int
    images_deleted: int

    def describe(self, cutoff: pd.Timestamp) -> str:
        return (
            f"{self.images_deleted} image(s) logged before {cutoff:%Y-%m-%d %H:%M} UTC deleted "
            f"from {self.files_rewritten} of {self.files_read} file(s); their records are kept"
        )


def _without_old_images(data: bytes, cutoff: pd.Timestamp) -> tuple[bytes | None, int]:
    """A part file's bytes with the image of every record older than ``cutoff`` emptied
    (None when there was nothing to delete), and how many were."""
    table = pd.read_parquet(io.BytesIO(data))
    if "image" not in table.columns or table.empty:
        return None, 0
    old = (pd.to_datetime(table["time"], utc=True) < cutoff).to_numpy() & table["image"].notna()
    if not old.any():
        return None, 0
    table["image"] = table["image"].where(~old, None)
    out = io.BytesIO()
    table.to_parquet(out, index=False)
    return out.getvalue(), int(old.sum())


def prune_images(uri: str, cutoff: pd.Timestamp) -> Pruned:
    """Delete the image bytes of every record logged before ``cutoff`` (set by
    ``serve.log_retention_days``) and keep the records: the review queue loses those
    images, the monitor keeps its evidence. A part file is rewritten whole (atomically in
    a folder). Files are picked by their day folder: a file holds records up to its day
    (and at most a rotation earlier), so days later than the one after the cutoff's are
    not read."""
    last = (cutoff + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    read = rewritten = deleted = 0
    write = sink_for(uri)  # the writer's own way: atomic in a folder, a put on S3
    for part in _parts(uri, last=last):
        read += 1
        kept, n = _without_old_images(part.read(), cutoff)
        if kept is not None:
            write(kept, part.name)
            rewritten, deleted = rewritten + 1, deleted + n
    return Pruned(read, rewritten, deleted)
