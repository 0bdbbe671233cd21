"""`skinlesion review serve`: the review page. Reviewers sign in (:mod:`.auth`), see the
queue of referred images (:mod:`.queue`), open a case (the image, patient fields,
prediction set, refer reason, class probabilities and the Grad-CAM overlay of the
version that answered) and give the confirmed diagnosis with how it was confirmed, or
"not a lesion / unusable image". Answers go to the review store (:mod:`.store`).

A Starlette app run by uvicorn, as `skinlesion serve` is. Health data rules: every
response needs a signed-in reviewer, none may be cached or framed, and an answer posted
from another site's page is refused (its ``Origin`` must be this page's).
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import numpy as np
import pandas as pd

from skinlesion.data.feedback import PATIENT
from skinlesion.labels import CLASSES
from skinlesion.review.auth import signed_in
from skinlesion.review.queue import REASON_KINDS, Case, build_queue
from skinlesion.review.store import DX_TYPES, NOT_A_LESION, Review, ReviewError, ReviewStore

log = logging.getLogger(__name__)
PAGE_SIZE = 50
RECORDS_TTL_SECONDS = 30.0  # the log is read again at most this often
GRADCAM_CACHE_CASES = 256  # PNGs of 35-47 KB at HAM10000's 200x150: 12 MB at most
SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    # not no-referrer: under it a browser posts forms with ``Origin: null``, which the
    # cross-site check below could not tell from a forged answer
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy", b"default-src 'self'; style-src 'self' 'unsafe-inline'"),
]
CLASS_NAMES = {
    "akiec": "actinic keratosis / intraepithelial carcinoma",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevus",
    "vasc": "vascular lesion",
}


@dataclass
class ReviewSource:
    """Where the page reads from: the prediction log's window and the versions' models
    (for Grad-CAM and the out-of-distribution distance), both cached."""

    log_uri: str
    window_days: int
    load_model: Callable[[str], Any]
    _records: tuple[float, tuple, pd.DataFrame] | None = None
    _models: dict[str, Any] = field(default_factory=dict)
    gradcam_cache_cases: int = GRADCAM_CACHE_CASES
    _gradcams: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def records(self, since: str | None, until: str | None) -> pd.DataFrame:
        """The log's records of the window: [since, until] days if given, else the last
        ``window_days`` days; read again after :data:`RECORDS_TTL_SECONDS`."""
        from skinlesion.serving.prediction_log import read_records

        key = (since, until)
        now = time.monotonic()
        with self._lock:
            if (
                self._records
                and self._records[1] == key
                and now - self._records[0] < RECORDS_TTL_SECONDS
            ):
                return self._records[2]
        start = (
            pd.Timestamp(since, tz="UTC")
            if since
            else pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=self.window_days)
        )
        end = pd.Timestamp(until, tz="UTC") + pd.Timedelta(days=1) if until else None
        records = read_records(self.log_uri, start, end)
        with self._lock:
            self._records = (now, key, records)
        return records

    def model(self, uri: str) -> Any | None:
        """The Keras model of a logged version (None where it cannot be loaded)."""
        with self._lock:
            if uri in self._models:
                return self._models[uri]
        try:
            model = self.load_model(uri)
        except Exception:  # a deleted or unreachable version: the case is still reviewable
            log.exception("review: cannot load %s (no Grad-CAM or distance for it)", uri)
            model = None
        with self._lock:
            self._models[uri] = model
        return model

    def distance_of(self, uri: str) -> tuple[Callable[[np.ndarray], np.ndarray], float] | None:
        from skinlesion.model.reliability import reliability_of

        model = self.model(uri) if uri else None
        reliability = reliability_of(model) if model is not None else None
        if reliability is None:
            return None
        return reliability.distance.score, reliability.ood_threshold

    def gradcam(self, case: Case) -> bytes | None:
        """The Grad-CAM overlay PNG of the case's top class, on the version that answered."""
        from PIL import Image

        from skinlesion.model.metadata import encode_metadata
        from skinlesion.model.preprocessing import read_image
        from skinlesion.serving.predict import blend, grad_cam

        with self._lock:
            if case.image_sha256 in self._gradcams:
                self._gradcams.move_to_end(case.image_sha256)
                return self._gradcams[case.image_sha256]
        model = self.model(str(case.record.get("model_uri") or ""))
        if model is None:
            return None
        raw = base64.b64decode(case.record["image"])
        patient = {c: case.record.get(c) for c in PATIENT}
        top = max(case.probabilities, key=case.probabilities.__getitem__)
        with self._lock:  # one TensorFlow gradient at a time
            cam = grad_cam(
                model,
                read_image(raw),
                CLASSES.index(top),
                encode_metadata(pd.DataFrame([patient]))[0],
            )
        with Image.open(io.BytesIO(raw)) as image:
            out = io.BytesIO()
            blend(image.convert("RGB"), cam).save(out, format="PNG")
        with self._lock:
            self._gradcams[case.image_sha256] = out.getvalue()
            while len(self._gradcams) > self.gradcam_cache_cases:
                self._gradcams.popitem(last=False)
        return out.getvalue()


def _templates() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,
    )


def _date(value: str | None) -> str | None:
    """A ``YYYY-MM-DD`` filter value, or None (anything else is ignored)."""
    try:
        return pd.Timestamp(value).strftime("%Y-%m-%d") if value else None
    except ValueError:
        return None


def create_review_app(
    store: ReviewStore,
    source: ReviewSource,
    reviewers: dict[str, str],
    retention_days: int,
) -> Any:
    """The page's ASGI app (see the module)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, RedirectResponse, Response
    from starlette.routing import Route

    templates = _templates()
    facts = {
        "retention_days": retention_days,
        "store": store.url.split(":", 1)[0].split("+", 1)[0],
        "classes": CLASSES,
        "class_names": CLASS_NAMES,
        "dx_types": DX_TYPES,
        "not_a_lesion": NOT_A_LESION,
        "kinds": REASON_KINDS,
    }

    def filters(request: Request) -> dict[str, str | None]:
        kind = request.query_params.get("reason") or None
        return {
            "reason": kind if kind in REASON_KINDS else None,
            "since": _date(request.query_params.get("since")),
            "until": _date(request.query_params.get("until")),
        }

    scored: list[tuple[pd.DataFrame, str | None, list[Case]]] = []  # the last window's

    def queue(chosen: dict[str, str | None]) -> list[Case]:
        """The window's cases, scored once per read of the log; those answered since
        are left out on every request."""
        records = source.records(chosen["since"], chosen["until"])
        if not scored or scored[0][0] is not records or scored[0][1] != chosen["reason"]:
            cases = build_queue(records, set(), source.distance_of, chosen["reason"])
            scored[:] = [(records, chosen["reason"], cases)]
        reviewed = store.reviewed()
        return [c for c in scored[0][2] if c.image_sha256 not in reviewed]

    def find(sha: str, chosen: dict[str, str | None]) -> Case | None:
        records = source.records(chosen["since"], chosen["until"])
        cases = build_queue(records[records["image_sha256"] == sha], set(), source.distance_of)
        return cases[0] if cases else None

    def render(name: str, request: Request, **values: Any) -> HTMLResponse:
        page = templates.get_template(name).render(
            reviewer=request.scope["reviewer"], **facts, **values
        )
        return HTMLResponse(page)

    def queue_page(request: Request) -> HTMLResponse:
        chosen = filters(request)
        cases = queue(chosen)
        page = max(int(request.query_params.get("page", "1") or 1), 1)
        shown = cases[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        query = urlencode({k: v for k, v in chosen.items() if v})
        return render(
            "queue.html", request, cases=shown, total=len(cases), page=page,
            first=(page - 1) * PAGE_SIZE, pages=max(1, -(-len(cases) // PAGE_SIZE)),
            chosen=chosen, query=query, window_days=source.window_days,
        )  # fmt: skip

    def case_page(request: Request) -> Response:
        chosen = filters(request)
        case = find(request.path_params["sha"], chosen)
        if case is None:
            return HTMLResponse("no such referred image in the window", status_code=404)
        return render(
            "case.html", request, case=case, reviews=store.of_image(case.image_sha256),
            query=urlencode({k: v for k, v in chosen.items() if v}), error=None,
        )  # fmt: skip

    def image(request: Request) -> Response:
        case = find(request.path_params["sha"], filters(request))
        if case is None:
            return Response(status_code=404)
        raw = base64.b64decode(case.record["image"])
        kind = "image/png" if raw.startswith(b"\x89PNG") else "image/jpeg"
        return Response(raw, media_type=kind)

    def gradcam(request: Request) -> Response:
        case = find(request.path_params["sha"], filters(request))
        png = source.gradcam(case) if case is not None else None
        return Response(png, media_type="image/png") if png else Response(status_code=404)

    async def answer(request: Request) -> Response:
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}
        sha = request.path_params["sha"]
        chosen = filters(request)
        case = await run_in_threadpool(find, sha, chosen)
        if case is None:
            return HTMLResponse("no such referred image in the window", status_code=404)
        given = form.get("answer", "")
        review = Review(
            image_sha256=sha,
            answer=given,
            dx_type=(form.get("dx_type") or None) if given != NOT_A_LESION else None,
            reviewer=request.scope["reviewer"],
            request_id=case.record.get("request_id"),
            row=int(case.record.get("row") or 0),
            logged_at=case.time,
            model_uri=case.record.get("model_uri"),
            model_version=str(case.record.get("model_version") or ""),
        )
        try:
            await run_in_threadpool(store.add, review)
        except ReviewError as err:
            response = render(
                "case.html", request, case=case, reviews=store.of_image(sha),
                query=urlencode({k: v for k, v in chosen.items() if v}), error=str(err),
            )  # fmt: skip
            response.status_code = 400
            return response
        log.info("review: %s answered %s for %s", review.reviewer, given, sha[:12])
        remaining = await run_in_threadpool(queue, chosen)
        query = urlencode({k: v for k, v in chosen.items() if v})
        target = f"/case/{remaining[0].image_sha256}" if remaining else "/"
        return RedirectResponse(f"{target}?{query}" if query else target, status_code=303)

    app = Starlette(
        routes=[
            Route("/", queue_page),
            Route("/case/{sha:str}", case_page, methods=["GET"]),
            Route("/case/{sha:str}", answer, methods=["POST"]),
            Route("/case/{sha:str}/image", image),
            Route("/case/{sha:str}/gradcam.png", gradcam),
        ]
    )
    return guarded(app, reviewers)


def guarded(app: Any, reviewers: dict[str, str]) -> Any:
    """``app`` behind basic auth (the reviewer's name in ``scope["reviewer"]``), with the
    security headers on every response and a cross-site POST refused."""

    async def send_plain(send: Any, status: int, text: str, extra: list | None = None) -> None:
        body = text.encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            *SECURITY_HEADERS,
            *(extra or []),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        reviewer = signed_in(headers.get("authorization"), reviewers)
        if reviewer is None:
            challenge = [(b"www-authenticate", b'Basic realm="skinlesion review", charset="UTF-8"')]
            await send_plain(send, 401, "sign in as a reviewer", challenge)
            return
        origin = headers.get("origin")
        if (
            scope["method"] == "POST"
            and origin
            and origin.split("://", 1)[-1] != headers.get("host")
        ):
            await send_plain(send, 403, "an answer must come from this page")
            return

        async def secured(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await app({**scope, "reviewer": reviewer}, receive, secured)

    return asgi
