"""Shared fixtures: synthetic HAM10000 folders and the real data when present."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from skinlesion.config.files import read_params
from skinlesion.config.parse import parse_params
from skinlesion.data.synth import make_synthetic_dataset
from tests.helpers import (
    REAL_DATA,
    ROOT,
    failed_kfp_task,
    free_port,
    running_mlflow_server,
    running_postgres,
    small_params,
    write_params,
)


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


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real `mlflow server` per test module (tests keep apart by experiment and
    model names), local artifacts."""
    tmp_path = tmp_path_factory.mktemp("mlflow_server")
    with running_mlflow_server(tmp_path, str(tmp_path / "artifacts")) as url:
        yield url


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

    port = free_port()
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
    """No telemetry from DVC, MLflow or GX, however the tests are started; every temporary
    file of the run, the suite's subprocesses' included, in one folder removed at the end.

    Why the folder: MLflow and Keras leave temporary folders behind (a downloaded model is
    a few hundred MB), and runs of the suite once filled this machine's disk with them."""
    import tempfile

    if not hasattr(config, "workerinput") and TEMP_ROOT not in os.environ:
        root = tempfile.mkdtemp(prefix="skinlesion-tests-")
        os.chmod(root, 0o711)  # the registry tests' PostgreSQL runs as its own user
        os.environ[TEMP_ROOT] = os.environ["TMPDIR"] = root
        os.environ.setdefault("SKINLESION_CACHE", os.path.join(root, "cache"))
        config.stash[_OWN_TEMP] = root
    tempfile.tempdir = None  # read TMPDIR again
    for name, value in (
        ("DVC_NO_ANALYTICS", "1"),
        ("MLFLOW_DISABLE_TELEMETRY", "true"),
        ("DO_NOT_TRACK", "1"),
        ("GX_ANALYTICS_ENABLED", "false"),
    ):
        os.environ.setdefault(name, value)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed kfp.local run shows the failed task's own log first, before the whole
    capture (which CI cuts in the middle)."""
    report = yield
    if report.failed and report.when == "call":
        task_log = failed_kfp_task(report.capstdout)
        if task_log:
            report.sections.insert(0, ("the kfp.local task that failed", task_log))
    return report


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the run's temporary folder (give ``--basetemp`` to keep a failing test's)."""
    root = config.stash.get(_OWN_TEMP, None)
    if root:
        shutil.rmtree(root, ignore_errors=True)


TEMP_ROOT = "SKINLESION_TEST_TMP"
_OWN_TEMP = pytest.StashKey[str]()


# The suite's wall time is bounded by its few long single runs: started first, they run
# while pytest-xdist spreads everything else around them, instead of trailing at the end.
LONG_RUNS = ("tests/model/test_cluster_profile.py", "tests/model/test_dvc_flow.py::test_dvc_repro")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(LONG_RUNS))  # stable otherwise
