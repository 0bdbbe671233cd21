"""A small fake Kubeflow Pipelines API server (v2beta1 REST) on 127.0.0.1.

It answers what `kfp.Client` asks when it creates experiments, runs and recurring runs
(and lists, disables, enables and deletes those), and records every request, so tests can
assert on what a cluster would have received. ``fail_recurring_run`` makes the next
creation of a recurring run fail, as an API server that refuses it would."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.fakes.http import serving

API = "/apis/v2beta1"


@dataclass
class FakeKfp:
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> experiment
    recurring_runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> job
    fail_recurring_run: bool = False
    requests: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    url: str = ""

    def active(self) -> list[dict[str, Any]]:
        """The recurring runs that would start runs: enabled ones."""
        return [j for j in self.recurring_runs.values() if j.get("mode", "ENABLE") == "ENABLE"]

    def bodies(self, method: str, path: str) -> list[dict[str, Any]]:
        """Every JSON body sent with ``method`` to ``path``."""
        return [b or {} for m, p, b in self.requests if m == method and p == path]

    def answer(self, method: str, path: str, query: dict, body: dict | None) -> tuple[int, Any]:
        if path == f"{API}/healthz":
            return 200, {"multi_user": False}
        if path == f"{API}/experiments" and method == "GET":
            wanted = _filter_name(query)
            found = [e for e in self.experiments.values() if e["display_name"] == wanted]
            return 200, ({"experiments": found, "total_size": len(found)} if found else {})
        if path == f"{API}/experiments" and method == "POST":
            experiment = {**(body or {}), "experiment_id": str(uuid.uuid4())}
            self.experiments[experiment["experiment_id"]] = experiment
            return 200, experiment
        if path.startswith(f"{API}/experiments/") and method == "GET":
            experiment = self.experiments.get(path.rsplit("/", 1)[1])
            return (200, experiment) if experiment else (404, {"error": "not found"})
        if path == f"{API}/runs" and method == "POST":
            return 200, {**(body or {}), "run_id": str(uuid.uuid4()), "state": "PENDING"}
        if path == f"{API}/recurringruns" and method == "POST":
            if self.fail_recurring_run:
                self.fail_recurring_run = False
                return 500, {"error": "recurring run refused"}
            job_id = str(uuid.uuid4())
            stamp = f"2026-12-01T00:00:{len(self.recurring_runs):02d}Z"
            job = {**(body or {}), "recurring_run_id": job_id, "status": "ENABLED",
                   "created_at": stamp}  # fmt: skip
            self.recurring_runs[job_id] = job
            return 200, job
        if path == f"{API}/recurringruns" and method == "GET":
            wanted = (query.get("experiment_id") or [None])[0]
            jobs = [j for j in self.recurring_runs.values() if wanted in (None, j["experiment_id"])]
            return 200, ({"recurringRuns": jobs, "total_size": len(jobs)} if jobs else {})
        if path.startswith(f"{API}/recurringruns/"):
            job_id, _, action = path.rsplit("/", 1)[1].partition(":")
            job = self.recurring_runs.get(job_id)
            if job is None:
                return 404, {"error": "not found"}
            if method == "DELETE":
                del self.recurring_runs[job_id]
            elif action in ("enable", "disable"):
                job["mode"] = action.upper()
                job["status"] = f"{action.upper()}D"
            return 200, {} if method != "GET" else job
        return 404, {"error": f"fake KFP does not serve {method} {path}"}


def _filter_name(query: dict[str, list[str]]) -> str | None:
    """The display name a `kfp.Client` list filter asks for, if any."""
    raw = (query.get("filter") or [""])[0]
    if not raw:
        return None
    for predicate in json.loads(raw).get("predicates", []):
        if predicate.get("key") in ("display_name", "name"):
            return predicate.get("string_value") or predicate.get("stringValue")
    return None


def _handler(fake: FakeKfp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _serve(self, method: str) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            fake.requests.append((method, url.path, body))
            status, answer = fake.answer(method, url.path, parse_qs(url.query), body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

    return Handler


@contextmanager
def running_fake_kfp() -> Iterator[FakeKfp]:
    fake = FakeKfp()
    with serving(_handler(fake)) as fake.url:
        yield fake
