"""A small fake Harvard Dataverse on 127.0.0.1: the file-listing API and file access
with HTTP range requests, plus switches to cut a download short or corrupt a file."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from tests.fakes.http import serving


@dataclass
class FakeDataverse:
    doi: str
    files: dict[int, Path]
    cut_after: dict[int, int] = field(default_factory=dict)  # file id -> bytes, once
    corrupt: set[int] = field(default_factory=set)  # served bytes differ from checksum
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)
    url: str = ""

    def listing(self) -> dict:
        entries = []
        for file_id, path in self.files.items():
            data = path.read_bytes()
            entry = {
                "id": file_id,
                "filename": path.name,
                "filesize": len(data),
                "checksum": {"type": "MD5", "value": hashlib.md5(data).hexdigest()},
            }
            if path.suffix == ".csv":  # Dataverse ingests tabular files as .tab
                entry["filename"] = path.with_suffix(".tab").name
                entry["originalFileName"] = path.name
                entry["originalFileSize"] = len(data)
            entries.append({"label": entry["filename"], "dataFile": entry})
        return {"status": "OK", "data": entries}


def _handler(fake: FakeDataverse) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            url = urlparse(self.path)
            fake.requests.append((url.path, self.headers.get("Range")))
            query = parse_qs(url.query)
            if url.path.endswith("/files") and query.get("persistentId") == [fake.doi]:
                body = json.dumps(fake.listing()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if url.path.startswith("/api/access/datafile/"):
                file_id = int(url.path.rsplit("/", 1)[1])
                self._send_file(file_id)
                return
            self.send_error(404)

        def _send_file(self, file_id: int) -> None:
            data = fake.files[file_id].read_bytes()
            if file_id in fake.corrupt:
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = fake.cut_after.pop(file_id, None)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.connection.shutdown(2)  # drop mid-transfer
                return
            self.wfile.write(body)

    return Handler


@contextmanager
def serve(fake: FakeDataverse) -> Iterator[FakeDataverse]:
    with serving(_handler(fake)) as fake.url:
        yield fake
