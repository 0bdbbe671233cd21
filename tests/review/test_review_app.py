"""The review page without a browser (Starlette's test client, a log folder, no model):
nothing is served to an anonymous or wrong sign-in, the queue shows the documented order
and the data notice, an answer is stored with its reviewer and version, a bad one is
refused with the reason, and an answer posted from another site is refused."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from skinlesion.labels import CLASSES
from skinlesion.review.app import ReviewSource, create_review_app
from skinlesion.review.auth import ReviewersError, reviewers_from, signed_in
from skinlesion.review.store import ReviewStore

pytestmark = pytest.mark.code
REVIEWERS = {"alice": "s3cret", "bob": "hunter2"}


def _jpeg(shade: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (shade, 90, 80)).save(buffer, format="JPEG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """A prediction log of today: three referred images (one with melanoma in its set)
    and one answered image."""
    now = pd.Timestamp.now(tz="UTC")
    rows = []
    for n, (sets, probs, refer) in enumerate(
        [
            (["nv", "bkl"], {"nv": 0.7, "bkl": 0.3}, True),
            (["mel", "nv"], {"mel": 0.55, "nv": 0.45}, True),
            (["nv", "bkl", "df"], {"nv": 0.4, "bkl": 0.3, "df": 0.3}, True),
            (["nv"], {"nv": 1.0}, False),
        ]
    ):
        image = _jpeg(40 * n + 20)
        rows.append(
            {
                "time": (now - pd.Timedelta(minutes=10 - n)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "request_id": f"req-{n}", "row": 0, "model_uri": "models:/m/4",
                "model_version": "4", "image_sha256": f"{n}" * 64, "age": 50.0,
                "sex": "female", "localization": "back", "prediction": max(probs, key=probs.get),
                "prediction_set": sets, "refer": refer,
                "refer_reason": "; ".join(
                    [f"{len(sets)} classes cannot be ruled out"]
                    + ["melanoma cannot be ruled out"] * ("mel" in sets)
                ) if refer else "",
                "image": image if refer else None, "embedding": None,
                **{c: probs.get(c, 0.0) for c in CLASSES},
            }
        )  # fmt: skip
    folder = tmp_path / "log" / f"date={now:%Y-%m-%d}"
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(folder / "part-1.parquet", index=False)
    return tmp_path / "log"


@pytest.fixture
def client(log_dir: Path, tmp_path: Path):
    from starlette.testclient import TestClient

    store = ReviewStore(f"sqlite:///{tmp_path / 'reviews.db'}")
    source = ReviewSource(str(log_dir), 30, lambda uri: None)
    app = create_review_app(store, source, REVIEWERS, retention_days=90)
    with TestClient(app, base_url="http://127.0.0.1:5002") as test_client:
        test_client.store = store
        yield test_client
    store.close()


def test_an_anonymous_or_wrong_sign_in_is_refused_everywhere(client):
    sha = "1" * 64
    for path in ("/", f"/case/{sha}", f"/case/{sha}/image", f"/case/{sha}/gradcam.png"):
        anonymous = client.get(path)
        assert anonymous.status_code == 401, path
        assert anonymous.headers["www-authenticate"].startswith("Basic")
        assert "lesion" not in anonymous.text and anonymous.headers["cache-control"] == "no-store"
        assert client.get(path, auth=("alice", "wrong")).status_code == 401
        assert client.get(path, auth=("mallory", "s3cret")).status_code == 401
    posted = client.post(f"/case/{sha}", data={"answer": "mel", "dx_type": "histo"})
    assert posted.status_code == 401 and client.store.all() == []


def test_the_queue_shows_the_documented_order_and_what_is_stored(client):
    page = client.get("/", auth=("alice", "s3cret"))
    assert page.status_code == 200 and page.headers["x-frame-options"] == "DENY"
    order = [part.split('"')[0] for part in page.text.split('data-sha="')[1:]]
    assert order == ["1" * 64, "2" * 64, "0" * 64]  # melanoma first, then the score
    assert "<strong>3</strong> referred image(s)" in page.text
    assert "for 90 days" in page.text and "sqlite" in page.text and "alice" in page.text
    image = client.get(f"/case/{'1' * 64}/image", auth=("alice", "s3cret"))
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert client.get(f"/case/{'3' * 64}", auth=("alice", "s3cret")).status_code == 404


def test_an_answer_is_stored_and_the_next_case_follows(client):
    auth = ("bob", "hunter2")
    answer = client.post(
        f"/case/{'1' * 64}", data={"answer": "mel", "dx_type": "histo"}, auth=auth,
        follow_redirects=False,
    )  # fmt: skip
    assert answer.status_code == 303 and answer.headers["location"] == f"/case/{'2' * 64}"
    [stored] = client.store.all()
    assert (stored["reviewer"], stored["answer"], stored["dx_type"]) == ("bob", "mel", "histo")
    assert (stored["model_version"], stored["request_id"]) == ("4", "req-1")
    order = client.get("/", auth=auth).text
    assert "1" * 64 not in order and "<strong>2</strong>" in order
    again = client.get(f"/case/{'1' * 64}", auth=auth)
    assert again.status_code == 200 and "Earlier answers" in again.text  # still reachable


def test_a_bad_or_cross_site_answer_is_refused(client):
    auth = ("alice", "s3cret")
    bad = client.post(f"/case/{'2' * 64}", data={"answer": "mel"}, auth=auth)
    assert bad.status_code == 400 and "needs one of histo" in bad.text
    forged = client.post(
        f"/case/{'2' * 64}", data={"answer": "nv", "dx_type": "histo"}, auth=auth,
        headers={"Origin": "https://elsewhere.example"},
    )  # fmt: skip
    assert forged.status_code == 403 and client.store.all() == []
    filtered = client.get("/?reason=melanoma", auth=auth).text
    assert "1" * 64 in filtered and "0" * 64 not in filtered


def test_reviewers_come_from_name_password_entries():
    assert reviewers_from("alice:a:b, bob:pw\ncarol:x") == {
        "alice": "a:b",
        "bob": "pw",
        "carol": "x",
    }
    with pytest.raises(ReviewersError, match="no reviewers"):
        reviewers_from("  ")
    with pytest.raises(ReviewersError, match="not name:password"):
        reviewers_from("alice")
    header = "Basic " + base64.b64encode(b"alice:a:b").decode()
    assert signed_in(header, {"alice": "a:b"}) == "alice"
    assert signed_in("Basic !!!", {"alice": "a:b"}) is None
    assert signed_in("Bearer x", {"alice": "a:b"}) is None


def test_the_date_filter_reads_only_its_days(client):
    auth = ("alice", "s3cret")
    today = pd.Timestamp.now(tz="UTC")
    tomorrow = (today + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    later = client.get(f"/?since={tomorrow}", auth=auth).text
    assert "<strong>0</strong> referred image(s)" in later and "Nothing to review" in later
    yesterday = today - pd.Timedelta(days=1)  # the fixture's records: the last ten minutes
    days = client.get(f"/?since={yesterday:%Y-%m-%d}&until={today:%Y-%m-%d}", auth=auth).text
    assert "<strong>3</strong> referred image(s)" in days
    assert f'value="{yesterday:%Y-%m-%d}"' in days  # the filter stays filled in


def test_a_hashed_password_signs_in_and_the_secret_holds_no_password():
    from typer.testing import CliRunner

    from skinlesion.cli.main import command_line
    from skinlesion.review.auth import hash_password

    def header(name: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()

    hashed = hash_password("correct horse", iterations=1000)
    assert "correct horse" not in hashed and hashed != hash_password("correct horse", 1000)
    reviewers = reviewers_from(f"carol:{hashed},dave:pbkdf2_sha256$broken")
    assert signed_in(header("carol", "correct horse"), reviewers) == "carol"
    assert signed_in(header("carol", "wrong horse"), reviewers) is None
    assert signed_in(header("dave", "pbkdf2_sha256$broken"), reviewers) is None
    printed = CliRunner().invoke(
        command_line(), ["review", "hash-password", "erin"], input="s3cret!\ns3cret!\n"
    )
    assert printed.exit_code == 0, printed.output
    entry = printed.output.strip().splitlines()[-1]
    assert entry.startswith("erin:pbkdf2_sha256$600000$") and "s3cret!" not in entry
    assert signed_in(header("erin", "s3cret!"), reviewers_from(entry)) == "erin"


def test_grad_cam_overlays_are_drawn_once_and_the_oldest_dropped(log_dir, monkeypatch):
    """Each case's overlay is computed once and kept, up to ``gradcam_cache_cases`` cases
    (a long queue must not grow the page's memory without end)."""
    import numpy as np

    import skinlesion.serving.predict as predict
    from skinlesion.review.queue import build_queue

    drawn = []

    def fake_grad_cam(model, image, class_index, metadata=None):
        drawn.append(class_index)
        return np.zeros((4, 4))

    monkeypatch.setattr(predict, "grad_cam", fake_grad_cam)
    source = ReviewSource(str(log_dir), 30, lambda uri: object(), gradcam_cache_cases=2)
    cases = build_queue(source.records(None, None), set())
    assert len(cases) == 3
    first = source.gradcam(cases[0])
    assert Image.open(io.BytesIO(first)).format == "PNG"
    assert source.gradcam(cases[0]) == first and len(drawn) == 1  # kept
    source.gradcam(cases[1])
    source.gradcam(cases[2])  # three cases, room for two: the first is dropped
    source.gradcam(cases[0])
    assert len(drawn) == 4
