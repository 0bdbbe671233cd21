"""What tests share besides fixtures: the project root, shrunk params, tiny models,
running a real MLflow server, a KFP local run. Fixtures live in conftest.py and use these."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from skinlesion.config.files import read_params
from skinlesion.config.parse import parse_params

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("SKINLESION_REAL_DATA_DIR", ROOT.parent / "shared/data/ham10000"))


def small_params(base: dict, **train_overrides: dict) -> dict:
    """params.yaml shrunk for tests: 32x32 images, few epochs, light augmentation."""
    import copy

    params = copy.deepcopy(base)
    params["input"]["image_size"] = 32
    # synthetic classes differ by colour: keep geometry augmentation, drop colour jitter
    params["input"]["augment"].update(brightness=0, contrast=0, saturation=0)
    params["oversample"]["min_per_class"] = 30
    cnn = params["train"]["cnn"]
    cnn.update(
        epochs=6,
        batch_size=32,
        early_stopping_patience=6,
        filters=[16, 32],
        dense_units=16,
        lr=0.01,
        bn_momentum=0.9,  # batch-norm statistics must settle within a few dozen steps
        ema_momentum=0.9,  # weight averaging on, over a horizon of a few dozen steps too
    )
    res = params["train"]["resnet152v2"]
    res.update(head_epochs=2, fine_tune_epochs=0, batch_size=32, head_dense_units=16)
    lite = params["train"]["efficientnet_lite"]
    lite.update(image_size=32, head_epochs=2, fine_tune_epochs=1, batch_size=32)
    for name, values in train_overrides.items():
        params["train"][name].update(values)
    return params


def cluster_miniature(cluster: dict, checkpoint_dir: str, resnet_weights: str = "") -> dict:
    """``cluster.overrides`` with sizes shrunk and every switch kept: one or two epochs per
    phase at 32 px (tests/model/test_cluster_profile.py, tests/image). What is not a size:
    the checkpoint folder (the test's own) and ResNet's weights (a local file instead of
    Keras's hub, which is out of reach here)."""
    import copy

    overrides = copy.deepcopy(cluster["overrides"])
    overrides["input"]["image_size"] = 32
    overrides["oversample"] = {"min_per_class": 10}  # few images: about 70 to train on
    train = overrides["train"]
    train["checkpoint_dir"] = checkpoint_dir
    batch = {"batch_size": 8}  # per replica: several steps an epoch on so few images
    train["cnn"].update(epochs=2, **batch)
    train["efficientnet_lite"].update(
        image_size=32, head_epochs=1, fine_tune_epochs=1, full_epochs=1, **batch
    )
    train["resnet152v2"].update(weights=resnet_weights, head_epochs=1, fine_tune_epochs=1, **batch)
    return overrides


def step_inputs(params: dict, *sections: str) -> dict[str, str]:
    """``sections`` of ``params`` as a pipeline step receives them: outputs of the real
    read-params step (JSON text each; ``params_hash`` is the whole params' hash)."""
    import json

    from components.read_params.component import read_params

    outputs = read_params.python_func(params=json.dumps(params))
    return {name: getattr(outputs, name) for name in sections}


def tiny_model(
    seed: int = 0,
    size: int = 16,
    metadata: bool = False,
    calibration: tuple[list, object] | None = None,
    invalid_input: str = "refuse",
):
    """A tiny untrained CNN with its preprocessing, as training saves one (its weights
    depend on ``seed``).

    With ``calibration`` (raw images of one size and their class indices) it also carries
    a reliability fitted on them, as training fits one (alpha 0.3: a handful of images
    per class; the same images as reference and calibration)."""
    import keras

    from skinlesion.model.metadata import METADATA_DIM
    from skinlesion.model.networks import build_cnn
    from skinlesion.model.preprocessing import with_preprocessing

    params = parse_params(read_params(ROOT / "params.yaml"))
    cfg = params.train.model("cnn").model_copy(update={"filters": [4, 8], "dense_units": 8})
    keras.utils.set_random_seed(seed)
    core = build_cnn(cfg, size, metadata_dim=METADATA_DIM if metadata else 0)
    model = with_preprocessing(core, size, center_crop=True)
    if calibration is not None:
        settings = params.train.reliability.model_copy(
            update={"alpha": 0.3, "invalid_input": invalid_input}
        )
        model = _with_reliability(model, core, *calibration, settings, params.validate_)
    return model


def log_tiny_model(
    seed: int = 0,
    size: int = 16,
    metadata: bool = False,
    calibration: tuple[list, object] | None = None,
    invalid_input: str = "refuse",
):
    """:func:`tiny_model` logged to the active MLflow run as training logs a model;
    returns MLflow's ModelInfo."""
    import tempfile

    import numpy as np

    from skinlesion.model.servable import log_serving_model

    model = tiny_model(seed, size, metadata, calibration, invalid_input)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        example = np.random.default_rng(seed).integers(0, 255, (80, 96, 3), dtype=np.uint8)
        return log_serving_model(path, example)


def calibration_images(synth_dir: Path, n: int = 140) -> tuple[list, object]:
    """Synthetic lesion images (200x150) and their class indices: what a tiny model's
    reliability is fitted on."""
    import numpy as np
    import pandas as pd

    from skinlesion.labels import CLASSES
    from skinlesion.model.preprocessing import read_image

    catalog = pd.read_csv(synth_dir / "HAM10000_metadata.csv").head(n)
    images = [
        read_image(next(synth_dir.rglob(f"{i}.jpg")).read_bytes()) for i in catalog["image_id"]
    ]
    return images, np.array([CLASSES.index(d) for d in catalog["dx"]])


def _with_reliability(model, core, images, labels, settings, validation):
    """``model`` with a reliability fitted on ``images`` by the library's own parts."""
    import numpy as np

    from skinlesion.data.contract import InputContract
    from skinlesion.model.metadata import image_size, model_inputs
    from skinlesion.model.preprocessing import with_preprocessing
    from skinlesion.model.reliability import (
        Reliability,
        attach,
        feature_model,
        pooled_feature_layer,
    )

    layer = pooled_feature_layer(core)
    probe = with_preprocessing(feature_model(core, layer), image_size(core), True)
    inputs = model_inputs(probe, np.stack(images), None)
    features, probs = probe.predict(inputs, verbose=0)
    reliability = Reliability.fit(
        (features, labels),
        (features, probs, labels),
        settings,
        InputContract.of(validation),
        layer,
    )
    return attach(model, reliability)


def run_kfp_locally(tmp_path: Path, tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """kfp.local with each step a subprocess in ``tmp_path``, MLflow at ``tracking_uri``
    (what the cluster's Secret sets)."""
    from kfp import local

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("SKINLESION_PROGRESS", "0")
    monkeypatch.chdir(tmp_path)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "pipeline_root"),
        raise_on_error=True,
    )


def failed_kfp_task(captured: str, lines: int = 60) -> str:
    """The log of the task that failed a kfp.local run, from a test's captured output: kfp
    2.16 names no task in the error it raises when the task sits inside a condition
    ("Inner task failed: ."), and CI shows only the head and tail of a long capture."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", captured).splitlines()
    finished = re.compile(r"Task '.*' finished with status FAILURE")
    failed = [i for i, line in enumerate(text) if finished.search(line)]
    if not failed:
        return ""
    end = failed[-1]
    starts = [i for i in range(end) if "Executing task" in text[i]]
    start = starts[-1] if starts else 0
    return "\n".join(text[max(start, end - lines) : end + 1])


def write_params(params: dict, path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def train_argmax(
    workspace: Path, params: dict, tmp_path: Path, model: str, out: Path, report: Path, **settings
):
    """``model`` trained on the synthetic workspace (its manifest and data paths are
    relative to it), with ``settings`` over the small section, checkpoints in ``tmp_path``
    and no melanoma operating point: the figures a test reads are the plain argmax's."""
    from skinlesion.training.lifecycle import train_model

    small = small_params(params, **{model: settings})
    small["train"]["checkpoint_dir"] = str(tmp_path / "ckpt")
    small["train"]["decision_min_mel_recall"] = 0
    cwd = Path.cwd()
    os.chdir(workspace)
    try:
        return train_model(model, "train.csv", "data", out, report, parse_params(small))
    finally:
        os.chdir(cwd)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to a server's process group, SIGKILL when it has not ended within a minute
    (on a loaded machine the server's workers can take that long to stop)."""
    import signal

    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def postgres_bindir() -> Path | None:
    """Debian's PostgreSQL server binaries (initdb, pg_ctl), newest version first."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    return found[0].parent if found else None


@contextlib.contextmanager
def running_mlflow_server(
    store_dir: Path,
    artifacts_destination: str,
    env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
    backend_store_uri: str | None = None,
    port: int | None = None,
) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 (backend ``backend_store_uri``, by default
    sqlite in ``store_dir``; artifacts proxied to ``artifacts_destination``); yields its
    URL and stops it afterwards."""
    port = port or free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    # The server's optional job runner (huey consumers: several processes of ~250 MB each)
    # serves nothing this project uses, and only slows a small test machine down.
    env = {
        **(env if env is not None else os.environ),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    proc = subprocess.Popen(
        [
            str(mlflow_bin),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            backend_store_uri or f"sqlite:///{store_dir / 'server.db'}",
            "--artifacts-destination",
            artifacts_destination,
            "--workers",
            "1",
            *extra_args,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(proc, port, f"{url}/health", "mlflow server", timeout=120)
        yield url
    finally:
        stop_group(proc)


def wait_for_server(
    proc: subprocess.Popen,
    port: int,
    probe: str,
    name: str,
    timeout: float,
    log: Path | None = None,
    answered: Callable[[Any], bool] = lambda response: response.ok,
) -> None:
    """Wait until the server ``proc`` started on ``port`` answers ``probe`` (``answered``
    tells a good answer) from its own socket; fail at once if it exits (with the tail of
    its ``log``), or after ``timeout`` seconds."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = log.read_text()[-3000:] if log else f"port {port} taken?"
            pytest.fail(f"{name} exited with {proc.returncode}: {said}")
        try:
            if answered(requests.get(probe, timeout=10)) and _listens(proc, port):
                return
        except requests.RequestException:  # not up yet, or slow on a busy machine
            pass
        time.sleep(0.5)
    pytest.fail(f"{name} did not start within {timeout:.0f} s")


def _listens(proc: subprocess.Popen, port: int) -> bool:
    """Whether ``proc`` (or a process it started) listens on ``port``: a free port picked
    by one pytest worker can be taken by another's server before this one binds it, and
    that server would answer the health check in its place, then stop with its module."""
    import psutil

    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
        return any(
            c.status == psutil.CONN_LISTEN and c.laddr.port == port
            for p in tree
            for c in p.net_connections(kind="tcp")
        )
    except psutil.NoSuchProcess:
        return False


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """A real PostgreSQL server on 127.0.0.1 in a temporary folder (initdb + pg_ctl), run
    as an unprivileged user (PostgreSQL refuses root); yields a database URI for MLflow.
    Missing binaries skip locally and fail in CI, which installs them (.ci/run)."""
    import pwd
    import tempfile

    bindir = postgres_bindir()
    if bindir is None:
        message = "PostgreSQL server not installed (Debian package postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    home = Path(tempfile.mkdtemp(prefix="skinlesion-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(home, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = home / "data"

    def pg(*args: str) -> None:
        subprocess.run([*run_as, *args], check=True, capture_output=True, timeout=120)

    pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-l",
        str(home / "log"),
        "-w",
        "start",
    )
    try:
        pg(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)


def assert_plot(path: Path, min_side: int = 100) -> None:
    """``path`` is a PNG picture with something drawn on it: readable, at least
    ``min_side`` pixels a side, and more than one colour (not a blank canvas)."""
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG", (path, image.format)
        assert min(image.size) >= min_side, (path, image.size)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 2, (path, "blank")


@contextlib.contextmanager
def serving(
    registry: str, workdir: Path, log_uri: str, model: str, runtime: str = "keras"
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`skinlesion serve` of ``model`` on ``runtime``, following its alias every second,
    on a free port, with its prediction log at ``log_uri`` rotated every second; yields
    its URL and process."""
    import yaml

    port = free_port()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["serve"]["log_rotate_seconds"] = 1
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry, "SKINLESION_PROGRESS": "0"}
    command = [
        str(Path(sys.executable).with_name("skinlesion")),
        "serve",
        "--model",
        model,
        "--runtime",
        runtime,
        "--port",
        str(port),
        "--follow",
        "1",
        "--log-uri",
        log_uri,
        "--params",
        str(workdir / "params.yaml"),
    ]
    log = (workdir / "serve.log").open("w")
    proc = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=log, stderr=log, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(
            proc, port, f"{url}/ping", "skinlesion serve", timeout=180, log=workdir / "serve.log"
        )
        yield url, proc
    finally:
        stop_group(proc)
        log.close()
