"""Shared fixtures: synthetic HAM10000 folders and the real data when present."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from skinlesion.config.files import read_params
from skinlesion.config.parse import parse_params
from skinlesion.data.synth import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("SKINLESION_REAL_DATA_DIR", ROOT.parent / "shared/data/ham10000"))


@pytest.fixture(scope="session")
def params() -> dict:
    """params.yaml as a plain mapping (tests derive variants of it; the library validates
    whatever it is given)."""
    return read_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def settings():
    """params.yaml, validated: the typed sections the library functions take."""
    return parse_params(read_params(ROOT / "params.yaml"))


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 120-image synthetic dataset, shared read-only by the whole session."""
    out = tmp_path_factory.mktemp("synth") / "ham10000"
    make_synthetic_dataset(out, n_images=120, seed=1)
    return out


@pytest.fixture
def synth_copy(synth_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic dataset that a test may break."""
    return Path(shutil.copytree(synth_dir, tmp_path / "ham10000"))


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    if not (REAL_DATA / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"real HAM10000 data not found at {REAL_DATA}")
    return REAL_DATA


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


def log_tiny_model(
    seed: int = 0,
    size: int = 16,
    metadata: bool = False,
    calibration: tuple[list, object] | None = None,
    invalid_input: str = "refuse",
):
    """A tiny untrained CNN, with its preprocessing, logged to the active MLflow run as
    training logs a model (its weights depend on ``seed``); returns MLflow's ModelInfo.

    With ``calibration`` (raw images of one size and their class indices) it also carries
    a reliability fitted on them, as training fits one (alpha 0.3: a handful of images
    per class; the same images as reference and calibration)."""
    import tempfile

    import keras
    import numpy as np

    from skinlesion.model.metadata import METADATA_DIM
    from skinlesion.model.networks import build_cnn
    from skinlesion.model.preprocessing import with_preprocessing
    from skinlesion.model.servable import log_serving_model

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
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        example = np.random.default_rng(seed).integers(0, 255, (80, 96, 3), dtype=np.uint8)
        return log_serving_model(path, example)


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


@pytest.fixture(scope="session")
def train_workspace(tmp_path_factory: pytest.TempPathFactory, params: dict) -> Path:
    """A folder with a 280-image synthetic set, its split and its oversampled manifest."""
    from skinlesion.data.oversample import oversample_manifest
    from skinlesion.data.split import split_dataset, write_manifest

    root = tmp_path_factory.mktemp("workspace")
    make_synthetic_dataset(root / "data", n_images=280, seed=4)
    small = small_params(params)
    write_params(small, root / "params.yaml")
    typed = parse_params(small)
    manifest = split_dataset(root / "data", typed.split, typed.data.workers)
    write_manifest(manifest, root / "split.csv", None)
    oversample_manifest(manifest, typed.oversample).to_csv(root / "train.csv", index=False)
    return root


@pytest.fixture(scope="session")
def trained_cnn(train_workspace: Path, params: dict):
    """The CNN trained once on the synthetic workspace (local sqlite MLflow store)."""
    from skinlesion.training.lifecycle import train_model

    cwd = Path.cwd()
    os.chdir(train_workspace)
    try:
        result = train_model(
            "cnn",
            "train.csv",
            "data",
            "models/cnn.keras",
            "reports/cnn",
            parse_params(small_params(params)),
        )
    finally:
        os.chdir(cwd)
    return train_workspace, result


@pytest.fixture
def local_conditions(monkeypatch):
    """kfp 2.16's local orchestrator splices the task output into the compiled condition
    text, ``inputs.parameter_values['pipelinechannel--check-changes-Output'] == 'changed'``,
    which leaves ``[''changed'']``: a syntax error, after which it skips the branch. The
    cluster's backend evaluates the same condition correctly; this shim hands the local
    evaluator the channel alone, the form its own tests use. It also spells the CEL
    booleans of ``flag == true`` the Python way, which the local evaluator needs."""
    from kfp.local.orchestrator import enhanced_dag_orchestrator as dag

    original = dag.ConditionEvaluator.evaluate_condition
    wrapped = re.compile(r"inputs\.parameter_values\['(pipelinechannel--[\w-]+)'\]")
    booleans = re.compile(r"== (true|false)\b")

    def evaluate(condition: str, io_store) -> bool:
        condition = booleans.sub(lambda m: f"== {m[1].capitalize()}", condition)
        return original(wrapped.sub(r"\1", condition), io_store)

    monkeypatch.setattr(dag.ConditionEvaluator, "evaluate_condition", staticmethod(evaluate))


@pytest.fixture(autouse=True)
def _isolated_mlflow_uri(monkeypatch: pytest.MonkeyPatch):
    """MLflow's set_tracking_uri and set_experiment also set $MLFLOW_TRACKING_URI and
    $MLFLOW_EXPERIMENT_ID (and a module global); undo them after each test so that one
    test's server or experiment does not leak into the next."""
    import mlflow
    from mlflow.tracking import fluent

    leaky = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")
    for name in leaky:
        monkeypatch.delenv(name, raising=False)
    yield
    mlflow.set_tracking_uri(None)
    fluent._active_experiment_id = None
    for name in leaky:
        os.environ.pop(name, None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    import requests

    port = port or _free_port()
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
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/health", timeout=10).ok:
                    break
            except requests.RequestException:  # not up yet, or slow on a busy machine
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start")
        yield url
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
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


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real `mlflow server` per test module (tests keep apart by experiment and
    model names), local artifacts."""
    tmp_path = tmp_path_factory.mktemp("mlflow_server")
    with running_mlflow_server(tmp_path, str(tmp_path / "artifacts")) as url:
        yield url


def _postgres_bindir() -> Path | None:
    """Debian's PostgreSQL server binaries (initdb, pg_ctl), newest version first."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    return found[0].parent if found else None


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """A real PostgreSQL server on 127.0.0.1 in a temporary folder (initdb + pg_ctl), run
    as an unprivileged user (PostgreSQL refuses root); yields a database URI for MLflow.
    Missing binaries skip locally and fail in CI, which installs them (.ci/run)."""
    import pwd
    import tempfile

    bindir = _postgres_bindir()
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
    port = _free_port()
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


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def registry_server(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` whose backend store is sqlite or a real PostgreSQL: the
    cluster runs on PostgreSQL, and sqlite alone proves neither its lock nor migrations."""
    tmp_path = tmp_path_factory.mktemp(f"registry_{request.param}")
    with contextlib.ExitStack() as stack:
        backend = None
        if request.param == "postgresql":
            backend = stack.enter_context(running_postgres())
        yield stack.enter_context(
            running_mlflow_server(tmp_path, str(tmp_path / "artifacts"), backend_store_uri=backend)
        )


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A local S3 endpoint: moto server on 127.0.0.1, one per test module."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Fake credentials for the local endpoint only."""
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", s3_endpoint),
    ):
        monkeypatch.setenv(name, value)
    return s3_endpoint


def pytest_configure(config: pytest.Config) -> None:
    """No telemetry from DVC, MLflow or GX, however the tests are started; converted
    weights cached in a folder of the session's, not the user's home."""
    import tempfile

    if "SKINLESION_CACHE" not in os.environ:
        os.environ["SKINLESION_CACHE"] = tempfile.mkdtemp(prefix="skinlesion-cache-")
    for name, value in (
        ("DVC_NO_ANALYTICS", "1"),
        ("MLFLOW_DISABLE_TELEMETRY", "true"),
        ("DO_NOT_TRACK", "1"),
        ("GX_ANALYTICS_ENABLED", "false"),
    ):
        os.environ.setdefault(name, value)


# The suite's wall time is bounded by its few long single runs: started first, they run
# while pytest-xdist spreads everything else around them, instead of trailing at the end.
LONG_RUNS = ("tests/model/test_cluster_profile.py", "tests/model/test_dvc_flow.py::test_dvc_repro")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(LONG_RUNS))  # stable otherwise
