"""Latency and throughput of `skinlesion serve` on 127.0.0.1, at several concurrencies,
for each runtime (the TensorFlow server and the exported model's), in one run.

For each runtime it starts the scoring server for a registered model (default:
params.yaml ``serve.model``, the champion of this checkout's MLflow store; its export is
made and logged first when it has none), waits until it answers ``/ping``, reads its
model-load time from ``GET /model``, and sends a bounded number of one-image requests
(real images with their patients' age, sex and site) at each concurrency. p50/p95/p99
latency and throughput go to JSON (default ``bench/results/serve_load.json``). With
``--log-uri`` the server keeps its prediction log there, and the result gives the log's
counters and files after the load. The model's own time, in process and part by part, is
bench/serve_profile.py's. Example::

    python bench/serve_load.py --requests 300 --concurrency 1 8 32
    python bench/serve_load.py --runtime onnx --log-uri /tmp/plog --out /tmp/log.json
    python bench/serve_load.py --model models:/m/3 --vs models:/m/1   # two models, one run
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import requests

from skinlesion.config.files import load_params
from skinlesion.progress import progress


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request_bodies(data_dir: Path, count: int) -> list[dict]:
    """``count`` one-image requests from the dataset's catalog, images as on disk."""
    from skinlesion.data.catalog import load_catalog

    catalog = load_catalog(data_dir).dropna(subset=["image_path"]).head(count)
    bodies = []
    for row in catalog.itertuples():
        image = base64.b64encode((data_dir / row.image_path).read_bytes()).decode()
        patient = {"age": row.age, "sex": row.sex, "localization": row.localization}
        known = {k: v for k, v in patient.items() if not pd.isna(v)}
        bodies.append({"dataframe_records": [{"image": image, **known}]})
    return bodies


def start_server(
    model: str, port: int, log_path: Path, prediction_log: str = "", runtime: str = "keras"
) -> tuple[subprocess.Popen, float]:
    """The server process and the seconds until it answered /ping; ``prediction_log``:
    where it logs what it answers ("": nowhere)."""
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
        "0",
        "--log-uri",
        prediction_log,
    ]
    log = log_path.open("w")
    env = {**os.environ, "SKINLESION_PROGRESS": "0"}
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
    while proc.poll() is None:
        try:
            if requests.get(f"http://127.0.0.1:{port}/ping", timeout=5).ok:
                return proc, time.perf_counter() - started
        except requests.RequestException:
            time.sleep(0.2)
    raise SystemExit(f"the server ended: see {log_path}")


def measure(url: str, bodies: list[dict], total: int, concurrency: int) -> dict:
    """Send ``total`` requests, ``concurrency`` at a time; latency percentiles in ms."""

    def one(i: int) -> tuple[float, int]:
        started = time.perf_counter()
        response = requests.post(url, json=bodies[i % len(bodies)], timeout=120)
        return time.perf_counter() - started, response.status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(
            progress(pool.map(one, range(total)), total=total, desc=f"concurrency {concurrency}")
        )
    wall = time.perf_counter() - started
    latencies = np.array([r[0] for r in results]) * 1000
    return {
        "concurrency": concurrency,
        "requests": total,
        "errors": sum(code != 200 for _, code in results),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p95_ms": round(float(np.percentile(latencies, 95)), 1),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "throughput_per_s": round(total / wall, 2),
        "wall_s": round(wall, 1),
    }


def log_summary(uri: str, counters: dict | None) -> dict:
    """The log's counters just after the load, and (for a folder) the records on disk once
    the server has stopped and written what it held."""
    summary = {"uri": uri, "counters_after_load": counters}
    folder = Path(uri)
    if not uri.startswith("s3://") and folder.is_dir():
        files = sorted(folder.rglob("*.parquet"))
        summary["files"] = len(files)
        summary["records_on_disk"] = int(sum(len(pd.read_parquet(f)) for f in files))
    return summary


def ensure_export(model: str) -> str:
    """The version ``model`` names, with its export logged (made now when missing)."""
    from skinlesion.promotion.registry import RegistryError, resolve_version
    from skinlesion.serving.exports import export_reference, fetch_export

    resolved, _ = resolve_version(model)
    with tempfile.TemporaryDirectory() as folder:
        try:
            fetch_export(resolved, folder)
        except RegistryError:
            print(f"exporting {resolved.uri} (it has no export yet)", file=sys.stderr)
            export_reference(resolved.uri, folder, log=True)
    return resolved.uri


def serve_and_measure(
    model: str, bodies: list[dict], args: argparse.Namespace, log: Path, runtime: str = "keras"
) -> dict:
    """Start the server of ``model``, warm it up, measure every concurrency level, stop it."""
    port = free_port()
    proc, ready_s = start_server(model, port, log, args.log_uri, runtime)
    base = f"http://127.0.0.1:{port}"
    try:
        served = requests.get(f"{base}/model", timeout=10).json()
        url = f"{base}/invocations"
        measure(url, bodies, 10, 1)  # warm-up: the first calls trace the graph
        levels = [measure(url, bodies, args.requests, c) for c in args.concurrency]
        logged = requests.get(f"{base}/model", timeout=10).json().get("prediction_log")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    return {
        "model": model,
        "runtime": runtime,
        "served": served,
        "server_ready_s": round(ready_s, 1),
        "model_load_s": served["load_seconds"],
        "levels": levels,
        "prediction_log": log_summary(args.log_uri, logged) if args.log_uri else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="MLflow model URI (default: params serve.model)")
    parser.add_argument(
        "--vs", help="a second model URI, measured right after on the same requests"
    )
    parser.add_argument(
        "--runtime", nargs="+", default=["keras", "onnx"], choices=["keras", "onnx"],
        help="the servers to measure, one after the other (default: both)",
    )  # fmt: skip
    parser.add_argument("--data-dir", type=Path, help="images (default: params data.raw_dir)")
    parser.add_argument("--requests", type=int, default=300, help="per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--log-uri", default="", help="prediction log folder or s3 prefix")
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve_load.json"))
    args = parser.parse_args()

    params = load_params()
    requested = args.model or params.serve.model
    from skinlesion.tracking import configure_tracking

    configure_tracking(params.tracking.experiment)
    model = ensure_export(requested) if "onnx" in args.runtime else requested
    bodies = request_bodies(args.data_dir or Path(params.data.raw_dir), 64)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "model": requested,
        "pinned": model,
        "servers": {
            runtime: serve_and_measure(
                model, bodies, args, args.out.with_suffix(f".{runtime}.log"), runtime
            )
            for runtime in args.runtime
        },
        "image_bytes_mean": int(np.mean([len(b["dataframe_records"][0]["image"]) for b in bodies])),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count()},
    }
    if args.vs:
        result["vs"] = serve_and_measure(args.vs, bodies, args, args.out.with_suffix(".vs.log"))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
