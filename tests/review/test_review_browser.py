"""The review loop as a person uses it, in a real browser: Debian's headless Chromium driven
by Selenium through Debian's chromedriver (no downloaded browser builds).

A champion on a real `mlflow server` answers synthetic lesions through `skinlesion serve`,
whose log keeps the bytes of the referred ones (params.yaml: ``log_images: referred``).
`skinlesion review serve` shows them: an anonymous visit is refused; a reviewer signs in,
sees the queue in the documented order, opens the first case (its image and Grad-CAM
drawn), answers three cases, one of them "not a lesion", and `review export` then adds
exactly the two confirmed lesions as a new data version."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
import pandas as pd
import pytest
import requests
from typer.testing import CliRunner

from skinlesion.cli.main import command_line
from skinlesion.data.catalog import load_catalog
from skinlesion.data.synth import make_synthetic_dataset
from skinlesion.data.versions import data_version
from skinlesion.serving.prediction_log import read_records
from tests.helpers import (
    ROOT,
    assert_plot,
    calibration_images,
    free_port,
    log_tiny_model,
    serving,
    stop_group,
    wait_for_server,
)

# In `make test-extended` (CI runs it after `make test`): the suite's 12 minutes had no
# room for its half minute; the page without a browser is in the suite (test_review_app).
pytestmark = [pytest.mark.model, pytest.mark.integration, pytest.mark.extended]
NAME = "review-test"
REVIEWER = ("alice", "s3cret")
# A folder to keep the queue's and a case's screenshots in: docs/images for the docs
# (SKINLESION_SCREENSHOTS=docs/images pytest tests/review/test_review_browser.py).
SCREENSHOTS = "SKINLESION_SCREENSHOTS"


def _chromium() -> tuple[str, str]:
    """Debian's chromium and chromedriver (`make chromium` installs them): missing, the
    test is skipped here and fails in CI."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        message = "Debian's chromium and chromium-driver are not installed (make chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return browser, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1400,1000", "--disable-gpu"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(300)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def served_log(mlflow_server: str, synth_dir: Path, tmp_path_factory) -> Iterator[Path]:
    """The prediction log of 16 synthetic lesions, new to the data, answered by the
    champion."""
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("review")
    with mlflow.start_run():
        info = log_tiny_model(
            seed=5, size=24, metadata=True, calibration=calibration_images(synth_dir)
        )
    mlflow.register_model(info.model_uri, NAME)
    mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", "1")
    mlflow.set_tracking_uri(None)
    workdir = tmp_path_factory.mktemp("review-serve")
    log = workdir / "log"
    new = workdir / "new"  # lesions the data does not hold yet
    make_synthetic_dataset(new, n_images=16, seed=31)
    catalog = pd.read_csv(new / "HAM10000_metadata.csv").astype(object)
    catalog = catalog.where(catalog.notna(), None)  # unknown fields: left out as JSON null
    rows = [
        {"image": base64.b64encode(next(new.rglob(f"{i}.jpg")).read_bytes()).decode(),
         "age": r.age, "sex": r.sex, "localization": r.localization}
        for i, r in zip(catalog["image_id"], catalog.itertuples(), strict=True)
    ]  # fmt: skip
    with serving(mlflow_server, workdir, str(log), f"models:/{NAME}@champion") as (url, _):
        for row in rows:
            answer = requests.post(
                f"{url}/invocations", json={"dataframe_records": [row]}, timeout=120
            )
            assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 60
        while len(read_records(str(log))) < len(rows) and time.monotonic() < deadline:
            time.sleep(0.5)
    yield log


@pytest.fixture(scope="module")
def review_page(
    mlflow_server: str, served_log: Path, tmp_path_factory
) -> Iterator[tuple[str, str]]:
    """`skinlesion review serve` on a free port of 127.0.0.1: its URL and store URL."""
    workdir = tmp_path_factory.mktemp("review-page")
    store = f"sqlite:///{workdir / 'reviews.db'}"
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "SKINLESION_PROGRESS": "0",
           "SKINLESION_REVIEWERS": f"{REVIEWER[0]}:{REVIEWER[1]},bob:other"}  # fmt: skip
    command = [str(Path(sys.executable).with_name("skinlesion")), "review", "serve", "--store",
               store, "--log", str(served_log), "--port", str(port), "--params",
               str(ROOT / "params.yaml")]  # fmt: skip
    output = (workdir / "review.log").open("w")
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=output, stderr=output,
                            start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(  # any answer will do: an anonymous one is refused, as it should be
            proc, port, url, "skinlesion review serve", timeout=120,
            log=workdir / "review.log", answered=lambda response: True,
        )  # fmt: skip
        yield url, store
    finally:
        stop_group(proc)
        output.close()


def _case_of(url: str) -> str:
    """The image a case page's URL names ("" for the queue)."""
    return url.split("/case/")[1].split("?")[0] if "/case/" in url else ""


def test_a_reviewer_answers_three_cases_and_two_lesions_become_data(
    browser, review_page, served_log, synth_copy, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, store = review_page
    assert requests.get(url, timeout=30).status_code == 401  # anonymous: refused
    browser.get(url)  # the browser asks for a sign-in and shows nothing of the page
    assert "case-row" not in browser.page_source and "data-notice" not in browser.page_source

    signed_in = (
        urlsplit(url)
        ._replace(netloc=f"{REVIEWER[0]}:{REVIEWER[1]}@{urlsplit(url).netloc}")
        .geturl()
    )
    browser.get(signed_in + "/")
    assert browser.find_element(By.ID, "reviewer").text == REVIEWER[0]
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.case-row")
    referred = read_records(str(served_log))
    referred = referred[referred["refer"].astype(bool)]
    assert len(rows) == referred["image_sha256"].nunique() >= 3
    keys = [(-int(r.get_attribute("data-melanoma")), -float(r.get_attribute("data-score")))
            for r in rows]  # fmt: skip
    assert keys == sorted(keys)  # melanoma in the set first, then the score
    shots = Path(os.environ.get(SCREENSHOTS) or tmp_path)  # the docs' pictures, when asked
    browser.save_screenshot(str(shots / "review-queue.png"))
    assert_plot(shots / "review-queue.png")

    rows[0].find_element(By.CSS_SELECTOR, "a.open").click()
    drawn = "return arguments[0].complete && arguments[0].naturalWidth > 0"
    for image in ("image", "gradcam"):
        element = browser.find_element(By.ID, image)
        deadline = time.monotonic() + 120
        while not browser.execute_script(drawn, element) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert browser.execute_script(drawn, element), image
    browser.save_screenshot(str(shots / "review-case.png"))
    answered = []
    for answer, dx_type in (("mel", "histo"), ("bcc", "follow_up"), ("not_a_lesion", None)):
        answered.append(_case_of(browser.current_url))
        browser.find_element(By.ID, f"answer-{answer}").click()
        if dx_type:
            Select(browser.find_element(By.ID, "dx_type")).select_by_value(dx_type)
        browser.find_element(By.ID, "submit").click()
        WebDriverWait(browser, 120).until(lambda b: _case_of(b.current_url) not in answered)
    browser.get(signed_in + "/")
    assert len(browser.find_elements(By.CSS_SELECTOR, "tr.case-row")) == len(rows) - 3

    before, rows_before = data_version(synth_copy), len(load_catalog(synth_copy))
    result = CliRunner().invoke(
        command_line(),
        ["review", "export", "--to", str(synth_copy), "--store", store, "--log", str(served_log),
         "--params", str(ROOT / "params.yaml")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    added = load_catalog(synth_copy).iloc[rows_before:]
    assert data_version(synth_copy) != before
    assert sorted(added["dx"]) == ["bcc", "mel"] and len(added) == 2
