"""`skinlesion serve`: MLflow's scoring server for the registered model, following its alias.

The app is MLflow's own (``mlflow.pyfunc.scoring_server``: ``/invocations``, ``/ping``,
``/health``, ``/version``) around the model of :mod:`skinlesion.model.servable`, with four
additions around it:

* **Following the alias.** ``models:/name@champion`` is resolved to a version at start and
  checked again every ``follow_seconds``. When promotion (or a person in the MLflow UI)
  moves the alias, the new version is loaded beside the serving one and swapped in when
  it is ready: no restart and no failed request. A version that does not load is logged
  and skipped; the serving one stays. Polling rather than a registry webhook, because it
  needs no route from the MLflow server to each replica and no rights to patch
  Deployments, a missed event cannot leave a replica behind, and every replica, including
  one started later, converges on its own.
* **Which model answered.** Every response carries ``X-Model-Version`` (and
  ``X-Model-Uri``), and ``GET /model`` describes the served model and its load time.
* **A body limit.** A request body over ``max_body_bytes`` gets 413 before it is parsed.
* **The prediction log** (``serve.log_uri``): every image answered through
  ``/invocations`` is recorded off the request path (:mod:`skinlesion.serving.prediction_log`);
  the server asks the model for each image's embedding and strips it from the answer.
  Every response carries ``X-Request-Id`` (the client's, or a new one), the key of its
  log records. Image bytes only as ``serve.log_images`` says: none, the referred ones
  (for the review queue, :mod:`skinlesion.review`) or all. ``GET /model`` shows the log's counters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from skinlesion.promotion.registry import VERSION_URI, ResolvedVersion, pin, resolve_version

if TYPE_CHECKING:
    from skinlesion.serving.prediction_log import PredictionLog

log = logging.getLogger(__name__)

ENV_MODEL = "SKINLESION_SERVE_MODEL"
ENV_FOLLOW = "SKINLESION_SERVE_FOLLOW_SECONDS"
ENV_MAX_BODY = "SKINLESION_SERVE_MAX_BODY_BYTES"
ENV_LOG = "SKINLESION_SERVE_LOG"  # JSON: uri, images, rotate_records, rotate_seconds, queue
ENV_RUNTIME = "SKINLESION_SERVE_RUNTIME"
RUNTIMES = ("keras", "onnx")
# Deepest JSON nesting a request may have: MLflow's formats need four levels; Python's
# parser fails on tens of thousands (a 500), so deeper bodies get a 400 before parsing.
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


@dataclass(frozen=True)
class ServedModel(ResolvedVersion):
    """One loaded model: what was asked for and what it resolved to
    (:class:`~skinlesion.promotion.registry.ResolvedVersion`), and how long it took."""

    load_seconds: float = 0.0
    loaded_at: str = ""
    embeds: bool = False  # the model answers embeddings when asked (for the log)
    members: list[str] = field(default_factory=list)  # an ensemble's models
    runtime: str = "keras"  # keras (TensorFlow) or onnx (the version's export)


def load_served(requested: str, runtime: str = "keras") -> tuple[ServedModel, Any]:
    """Resolve, check and load ``requested`` as a pyfunc, timing the load: the registered
    model (``keras``) or its export (``onnx``)."""
    from skinlesion.model.loading import load_pyfunc
    from skinlesion.serving.exports import load_export

    started = time.perf_counter()
    resolved, info = resolve_version(requested)
    uri, version = resolved.uri, resolved.version
    model = load_export(resolved) if runtime == "onnx" else load_pyfunc(uri)
    seconds = time.perf_counter() - started
    from skinlesion.model.servable import EMBEDDING_PARAM

    params = getattr(info.signature, "params", None) if info.signature else None
    served = ServedModel(
        **asdict(resolved),
        load_seconds=round(seconds, 3),
        loaded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        embeds=any(p.name == EMBEDDING_PARAM for p in (params.params if params else [])),
        members=list((info.metadata or {}).get("members", [])),
        runtime=runtime,
    )
    log.info("serving %s (version %s, %s), loaded in %.1f s", uri, version or "-", runtime, seconds)
    return served, model


async def _read_body(receive: Any, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _respond(send: Any, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ScoringApp:
    """ASGI app: MLflow's scoring app for the current model, swapped when the alias moves."""

    def __init__(
        self,
        requested: str,
        follow_seconds: float,
        max_body_bytes: int,
        prediction_log: PredictionLog | None = None,
        log_images: bool | str = False,
        runtime: str = "keras",
    ) -> None:
        self.requested = requested
        self.runtime = runtime
        self.follow_seconds = follow_seconds
        self.max_body_bytes = max_body_bytes
        self.prediction_log = prediction_log
        self.log_images = log_images
        self.served, self.app = self._build(requested)
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None

    def _build(self, requested: str) -> tuple[ServedModel, Any]:
        from mlflow.pyfunc.scoring_server import init

        served, model = load_served(requested, self.runtime)
        return served, init(model)

    def follows(self) -> bool:
        match = VERSION_URI.match(self.requested)
        return self.follow_seconds > 0 and match is not None and match["alias"] is not None

    def check_alias(self) -> bool:
        """Load and swap in the alias's version if it moved; True when it did."""
        try:
            _, version = pin(self.requested)
            if version == self.served.version:
                return False
            served, app = self._build(self.requested)
        except Exception:  # keep serving what works; the log says why
            log.exception("alias %s: keeping version %s", self.requested, self.served.version)
            return False
        log.info(
            "alias %s moved: version %s -> %s", self.requested, self.served.version, served.version
        )
        self.served, self.app = served, app
        return True

    def _follow(self) -> None:
        while not self._stop.wait(self.follow_seconds):
            self.check_alias()

    def start(self) -> None:
        if self.follows() and self._follower is None:
            self._follower = threading.Thread(target=self._follow, name="follow-alias", daemon=True)
            self._follower.start()

    def stop(self) -> None:
        self._stop.set()
        if self.prediction_log is not None:
            self.prediction_log.close()

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        served, app = self.served, self.app  # one model for the whole request
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        if scope["path"] == "/model" and scope["method"] == "GET":
            described = {**asdict(served), "follows_alias": self.follows()}
            if self.prediction_log is not None:
                described["prediction_log"] = self.prediction_log.stats()
            await _respond(send, 200, described)
            return
        body = await _read_body(receive, self.max_body_bytes)
        if body is None:
            limit = self.max_body_bytes
            await _respond(
                send,
                413,
                {"error_code": "REQUEST_TOO_LARGE", "message": f"request body over {limit} bytes"},
            )
            return
        if _too_deep(body):
            message = f"request body nests deeper than {MAX_JSON_DEPTH} levels"
            await _respond(send, 400, {"error_code": "BAD_REQUEST", "message": message})
            return
        tags = [
            (b"x-model-version", served.version.encode()),
            (b"x-model-uri", served.uri.encode()),
        ]
        if self.prediction_log is not None and scope["path"] == "/invocations":
            await self._logged(scope, body, send, served, app, tags)
            return

        async def tagged(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *tags]}
            await send(message)

        await app(scope, _replay(body), tagged)

    async def _logged(
        self,
        scope: dict[str, Any],
        body: bytes,
        send: Any,
        served: ServedModel,
        app: Any,
        tags: list[tuple[bytes, bytes]],
    ) -> None:
        """Answer through MLflow's app with embeddings asked for, record the answered
        images on the prediction log, and send the answer without the embeddings. Any
        failure of the logging side leaves the request as it would be without a log."""
        from skinlesion.serving.log_records import (
            ask_embeddings,
            request_payload,
            request_rows,
            take_records,
        )

        received = time.time()
        request_id = _header(scope, b"x-request-id") or uuid.uuid4().hex
        payload = request_payload(body)
        rows = request_rows(payload) if payload is not None else None
        asked, keep = (
            ask_embeddings(payload) if rows is not None and served.embeds else (body, True)
        )
        inner = _with_length(scope, len(asked))
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                chunks.append(message.get("body", b""))

        await app(inner, _replay(asked), capture)
        answer = b"".join(chunks)
        if start.get("status") == 200 and rows is not None:
            try:
                answer, records = take_records(
                    answer, rows, served, request_id, received, self.log_images, keep
                )
                self.prediction_log.put(records)  # type: ignore[union-attr]
            except Exception:  # the log's problem, never the request's
                log.exception("prediction log: could not record request %s", request_id)
        headers = [
            (k, v)
            for k, v in start.get("headers", [])
            if k.lower() not in (b"content-length", b"x-request-id")
        ]
        headers += [
            *tags,
            (b"x-request-id", request_id.encode()),
            (b"content-length", str(len(answer)).encode()),
        ]
        await send({"type": "http.response.start", "status": start.get("status", 500),
                    "headers": headers})  # fmt: skip
        await send({"type": "http.response.body", "body": answer})


def _too_deep(body: bytes) -> bool:
    """Whether a JSON body nests deeper than :data:`MAX_JSON_DEPTH` (brackets outside
    strings counted; a body that is not JSON is left to the parser's own message)."""
    import numpy as np

    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return False
    codes = np.frombuffer(_JSON_STRING.sub(b'""', body), dtype=np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int32)
    steps -= np.isin(codes, (ord("]"), ord("}")))
    return bool(steps.cumsum().max() > MAX_JSON_DEPTH)


def _replay(body: bytes) -> Any:
    """An ASGI ``receive`` that gives ``body`` once, then waits as a server would."""
    replayed = False

    async def receive() -> dict[str, Any]:
        nonlocal replayed
        if replayed:
            await asyncio.Event().wait()  # nothing more will come
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")[:200]
    return None


def _with_length(scope: dict[str, Any], length: int) -> dict[str, Any]:
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
    return {**scope, "headers": [*headers, (b"content-length", str(length).encode())]}


def create_app() -> ScoringApp:
    """The app factory uvicorn calls (in each worker): its settings come from the
    environment that :func:`serve` sets."""
    settings = json.loads(os.environ.get(ENV_LOG) or "{}")
    prediction_log = None
    if settings.get("uri"):
        from skinlesion.serving.prediction_log import PredictionLog, sink_for

        prediction_log = PredictionLog(
            sink_for(settings["uri"]),
            rotate_records=int(settings["rotate_records"]),
            rotate_seconds=float(settings["rotate_seconds"]),
            max_queue=int(settings["queue"]),
        )
    return ScoringApp(
        os.environ[ENV_MODEL],
        float(os.environ.get(ENV_FOLLOW, "60")),
        int(os.environ.get(ENV_MAX_BODY, str(8 << 20))),
        prediction_log,
        settings.get("images", False),
        os.environ.get(ENV_RUNTIME, "keras"),
    )


def serve(
    model: str,
    host: str,
    port: int,
    workers: int,
    follow_seconds: float,
    max_body_bytes: int,
    log: dict[str, Any] | None = None,
    runtime: str = "keras",
) -> None:
    """Run the scoring server in this process (uvicorn) until it is stopped. ``log``:
    the prediction log's ``uri``, ``images``, ``rotate_records``, ``rotate_seconds`` and
    ``queue`` (no log without a uri)."""
    import uvicorn

    resolved, _ = resolve_version(model)  # a clear error here rather than in each worker
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r}: one of {', '.join(RUNTIMES)}")
    if runtime == "onnx":
        import tempfile

        from skinlesion.serving.exports import fetch_export

        with tempfile.TemporaryDirectory() as folder:
            fetch_export(resolved, folder)  # a version without an export: said here
    os.environ.update(
        {
            ENV_MODEL: model,
            ENV_FOLLOW: str(follow_seconds),
            ENV_MAX_BODY: str(max_body_bytes),
            ENV_LOG: json.dumps(log or {}),
            ENV_RUNTIME: runtime,
        }
    )
    uvicorn.run(
        "skinlesion.serving.server:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
    )
