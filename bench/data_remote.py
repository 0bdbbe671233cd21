"""Seconds to version, publish, push and pull the raw HAM10000 data against a local S3.

A moto server on 127.0.0.1 stands in for S3 (no network, so the figures measure DVC,
boto3 and the disk, not a link). In a scratch git + DVC repository it times, on a copy of
the data: the data version of the folder and of its published S3 prefix (from ETags),
``skinlesion data publish`` (validation + upload), ``dvc add``, ``dvc push``, and
``dvc pull`` into an empty cache. Writes ``bench/results/data_remote.json``::

    python bench/data_remote.py --data ../shared/data/ham10000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _timed(results: dict[str, Any], name: str, action: Callable[[], Any]) -> Any:
    print(f"{name} ...", flush=True)
    start = time.perf_counter()
    value = action()
    results[f"{name}_s"] = round(time.perf_counter() - start, 1)
    print(f"{name}: {results[f'{name}_s']} s", flush=True)
    return value


def _run(*cmd: str, cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ham10000"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import logging

    from moto.server import ThreadedMotoServer

    from skinlesion.config.files import load_params
    from skinlesion.data.publish import publish
    from skinlesion.data.storage import bootstrap_buckets
    from skinlesion.data.versions import data_version

    params = load_params(args.params)
    port = _free_port()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint),
    ):
        os.environ[name] = value
    os.environ.setdefault("SKINLESION_PROGRESS", "0")
    bootstrap_buckets(["bench-data"])
    results: dict[str, Any] = {"host": platform.node(), "cpus": os.cpu_count()}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            repo = Path(tmp) / "repo"
            raw = repo / "data/raw/ham10000"
            shutil.copytree(args.data, raw)
            results["files"] = sum(1 for p in raw.rglob("*") if p.is_file())
            results["megabytes"] = round(
                sum(p.stat().st_size for p in raw.rglob("*") if p.is_file()) / 1e6, 1
            )
            workers = params.data.workers
            version = _timed(results, "version_folder", lambda: data_version(raw, workers))
            target = _timed(
                results,
                "publish",
                lambda: publish(raw, "s3://bench-data/ham10000", params.validate_, workers),
            )
            remote = _timed(results, "version_s3_prefix", lambda: data_version(target))
            results["versions_agree"] = remote == version
            _run("git", "init", "-q", cwd=repo)
            _run(str(BIN / "dvc"), "init", "-q", cwd=repo)
            _run(str(BIN / "dvc"), "remote", "add", "-d", "s", "s3://bench-data/dvc", cwd=repo)
            _run(str(BIN / "dvc"), "remote", "modify", "s", "endpointurl", endpoint, cwd=repo)
            _timed(results, "dvc_add", lambda: _run(str(BIN / "dvc"), "add", str(raw), cwd=repo))
            _timed(results, "dvc_push", lambda: _run(str(BIN / "dvc"), "push", cwd=repo))
            shutil.rmtree(raw)
            shutil.rmtree(repo / ".dvc/cache")
            _timed(results, "dvc_pull", lambda: _run(str(BIN / "dvc"), "pull", cwd=repo))
            results["pulled_version_agrees"] = data_version(raw, workers) == version
    finally:
        server.stop()
    out = args.out or Path(__file__).parent / "results" / "data_remote.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
