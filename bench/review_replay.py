"""The review loop on the real sample: the test part replayed through the server, reviewed
in the browser, exported to a new data version.

1. `skinlesion serve` answers every image of the test part (lesions the champion never
   saw, one request each, with the patient's fields) and logs them with params.yaml's
   ``serve.log_images: referred``.
2. `skinlesion review serve` shows the queue: its length, its order (the first cases and
   how many have melanoma in the set, by reason) and the page's response times (the
   first, cold load, which loads the champion for the distances, then warm ones).
3. Headless Chromium (Debian's, through Selenium) signs in and answers the first three
   cases of the queue: the first two with their confirmed diagnosis from HAM10000's
   metadata (dx and dx_type, standing in for the dermatologist), the third "not a
   lesion / unusable image".
4. `skinlesion review export` adds the confirmed ones to a scratch copy of the data (hard
   links) from which the test part's lesions were taken out: the data as it stood
   before these patients' diagnoses came back (the replayed images are in the real data
   already, where add-labels would rightly skip them). `skinlesion check-changes` then
   runs on the real data (nothing changed: the champion's inputs) and on the exported
   copy (data changed).

Run from the checkout whose MLflow store holds the champion (after `dvc repro`)::

    python bench/review_replay.py --out bench/results/review_replay.json

No screenshot is kept of this run: the page shows HAM10000 images, which are not ours to
publish (CC BY-NC 4.0). The docs' screenshot comes from the synthetic browser test.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import requests
from serve_load import free_port, start_server

from skinlesion.config.files import load_params
from skinlesion.progress import progress

SKINLESION = str(Path(sys.executable).with_name("skinlesion"))


def replay(url: str, test: pd.DataFrame, data_dir: Path) -> dict:
    """One request per test image, with the patient's known fields."""
    started = time.perf_counter()
    referred = 0
    for row in progress(list(test.itertuples()), desc="replay"):
        patient = {"age": row.age, "sex": row.sex, "localization": row.localization}
        known = {k: v for k, v in patient.items() if not pd.isna(v)}
        image = base64.b64encode((data_dir / row.image_path).read_bytes()).decode()
        answer = requests.post(
            f"{url}/invocations", json={"dataframe_records": [{"image": image, **known}]},
            timeout=120,
        )  # fmt: skip
        answer.raise_for_status()
        referred += bool(answer.json()["predictions"][0]["refer"])
    seconds = time.perf_counter() - started
    return {"images": len(test), "referred": referred, "seconds": round(seconds, 1)}


def start_review(log: Path, store: str, port: int, reviewers: str, out: Path) -> subprocess.Popen:
    env = {**os.environ, "SKINLESION_PROGRESS": "0", "SKINLESION_REVIEWERS": reviewers}
    command = [SKINLESION, "review", "serve", "--store", store, "--log", str(log), "--port",
               str(port)]  # fmt: skip
    output = out.open("w")
    proc = subprocess.Popen(command, env=env, stdout=output, stderr=output, start_new_session=True)
    while proc.poll() is None:
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=5)
            return proc
        except requests.RequestException:
            time.sleep(0.3)
    raise SystemExit(f"the review page ended: see {out}")


def timed(url: str, auth: tuple[str, str], repeats: int) -> dict:
    """Seconds of the first request, then the median and largest of ``repeats`` more."""
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        response = requests.get(url, auth=auth, timeout=600)
        response.raise_for_status()
        times.append(time.perf_counter() - started)
    return {
        "first_ms": round(times[0] * 1000, 1),
        "p50_ms": round(float(np.median(times[1:])) * 1000, 1),
        "max_ms": round(max(times[1:]) * 1000, 1),
    }


def queue_of(html: str) -> list[dict]:
    """The queue's rows as the page lists them (its data attributes)."""
    rows = []
    for part in html.split('class="case-row"')[1:]:
        attrs = dict(
            (key, part.split(f'data-{key}="', 1)[1].split('"', 1)[0])
            for key in ("sha", "score", "melanoma")
        )
        rows.append({"sha": attrs["sha"], "score": float(attrs["score"]),
                     "melanoma_in_set": attrs["melanoma"] == "1"})  # fmt: skip
    return rows


def browse_and_answer(url: str, auth: tuple[str, str], truth: dict[str, tuple[str, str]]) -> list:
    """Chromium signs in, opens the first case and answers three (see the module)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(600)
    signed_in = (
        urlsplit(url)._replace(netloc=f"{auth[0]}:{auth[1]}@{urlsplit(url).netloc}").geturl()
    )
    answers = []
    try:
        driver.get(signed_in + "/")
        driver.find_elements(By.CSS_SELECTOR, "tr.case-row a.open")[0].click()
        for n in range(3):
            sha = driver.current_url.split("/case/")[1].split("?")[0]
            dx, dx_type = truth[sha] if n < 2 else ("not_a_lesion", "")
            driver.find_element(By.ID, f"answer-{dx}").click()
            if dx_type:
                Select(driver.find_element(By.ID, "dx_type")).select_by_value(dx_type)
            driver.find_element(By.ID, "submit").click()
            WebDriverWait(driver, 600).until(lambda d, s=sha: s not in d.current_url)
            answers.append({"sha": sha[:12], "answer": dx, "dx_type": dx_type or None})
    finally:
        driver.quit()
    return answers


def check_changes(data_dir: Path) -> str:
    done = subprocess.run(
        [SKINLESION, "check-changes", "--data-dir", str(data_dir)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


def without_lesions(data_dir: Path, lesions: set[str], target: Path) -> Path:
    """A hard-link copy of ``data_dir`` without ``lesions``' rows and images."""
    from skinlesion.data.catalog import find_metadata, load_catalog, read_metadata

    catalog = load_catalog(data_dir)
    dropped = set(catalog.loc[catalog["lesion_id"].isin(lesions), "image_path"].dropna())
    for source in data_dir.rglob("*"):
        relative = source.relative_to(data_dir)
        if source.is_dir() or relative.as_posix() in dropped or source.suffix in (".csv", ".tab"):
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target / relative)
        except OSError:  # another device
            shutil.copy2(source, target / relative)
    meta = find_metadata(data_dir)
    metadata = read_metadata(meta)
    metadata = metadata[~metadata["lesion_id"].isin(lesions)]
    metadata.to_csv(target / meta.name, index=False, sep="\t" if meta.suffix == ".tab" else ",")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=Path("data/split/manifest.csv"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/review_replay"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench/results/review_replay.json"))
    args = parser.parse_args()

    from skinlesion.data.catalog import load_catalog
    from skinlesion.data.versions import data_version
    from skinlesion.review.store import ReviewStore

    params = load_params()
    data_dir = Path(params.data.raw_dir)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    split = pd.read_csv(args.manifest)
    test = split[split["split"] == "test"].drop_duplicates("image_id").reset_index(drop=True)
    catalog = load_catalog(data_dir).set_index("image_id")
    truth = {
        hashlib.sha256((data_dir / catalog.loc[i, "image_path"]).read_bytes()).hexdigest(): (
            catalog.loc[i, "dx"], catalog.loc[i, "dx_type"])
        for i in test["image_id"]
    }  # fmt: skip

    log = args.work / "log"
    port = free_port()
    server, startup = start_server(params.serve.model, port, args.work / "serve.log", str(log))
    try:
        replayed = replay(f"http://127.0.0.1:{port}", test, data_dir)
    finally:
        server.terminate()  # the log writes what it holds as the server stops
        server.wait(120)
    replayed["server_startup_s"] = round(startup, 1)

    auth = ("bench", secrets.token_urlsafe(12))
    store = f"sqlite:///{args.work / 'reviews.db'}"
    review_port = free_port()
    page = start_review(log, store, review_port, f"{auth[0]}:{auth[1]}", args.work / "review.log")
    url = f"http://127.0.0.1:{review_port}"
    try:
        anonymous = requests.get(url, timeout=60).status_code
        queue_time = timed(f"{url}/", auth, args.repeats)
        html = requests.get(f"{url}/", auth=auth, timeout=600).text
        length = int(html.split('id="queue-length"><strong>', 1)[1].split("<", 1)[0])
        shown = queue_of(html)
        case_time = timed(f"{url}/case/{shown[0]['sha']}", auth, args.repeats)
        gradcam_time = timed(f"{url}/case/{shown[0]['sha']}/gradcam.png", auth, args.repeats)
        reasons = {
            kind: int(html_count)
            for kind in ("melanoma", "wide_set", "empty_set", "out_of_distribution")
            for html_count in [
                requests.get(f"{url}/?reason={kind}", auth=auth, timeout=600)
                .text.split('id="queue-length"><strong>', 1)[1]
                .split("<", 1)[0]
            ]
        }
        answers = browse_and_answer(url, auth, truth)
    finally:
        page.terminate()
        page.wait(60)
    reviews = ReviewStore(store).all()

    before = without_lesions(data_dir, set(test["lesion_id"]), args.work / "data")
    version_before = data_version(before)
    export = subprocess.run(
        [SKINLESION, "review", "export", "--to", str(before), "--store", store, "--log", str(log)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = {
        "model": params.serve.model,
        "replay": replayed,
        "log_images": params.serve.log_images,
        "anonymous_status": anonymous,
        "queue": {
            "length": length,
            "by_reason": reasons,
            "page_size": len(shown),
            "melanoma_in_set_shown": sum(r["melanoma_in_set"] for r in shown),
            "first": [{**r, "sha": r["sha"][:12]} for r in shown[:10]],
            "ordered": [(not r["melanoma_in_set"], -r["score"]) for r in shown]
            == sorted((not r["melanoma_in_set"], -r["score"]) for r in shown),
        },
        "response_ms": {"queue": queue_time, "case": case_time, "gradcam": gradcam_time},
        "answers": answers,
        "stored_reviews": len(reviews),
        "export": export.stdout.strip().splitlines()[-1],
        "data_version": {"before": version_before, "after": data_version(before)},
        "check_changes": {"real_data": check_changes(data_dir), "exported": check_changes(before)},
        "host": {"machine": platform.machine(), "cpus": os.cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
