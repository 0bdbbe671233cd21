"""The monitor's thresholds, chosen and checked by replay; then the monitor on a served log.

Part 1, replay. The champion answers the test part's images (lesions it never saw, as
traffic is) through the served model's own path (the pyfunc model with embeddings: what
the server logs), and shifted versions of that traffic: a colour cast, blur, older
patients only (60+), and another body-site mix (extremities only). From each pool,
``--windows`` windows of ``--window`` images are drawn, and every test of `monitor`
scores each against the model's logged reference. The JSON gives each test's scores per
scenario and, with params.yaml's thresholds, the false-alarm rate (in-distribution
windows with any test fired) and the detection rate of each shift.

Part 2, served. `skinlesion serve` with its prediction log answers ``--requests``
one-image requests of test images; `skinlesion monitor` over that log should say
stable. Then the same number of colour-cast images into a second log: drift.

Run from the checkout whose MLflow store holds the champion (after `dvc repro`)::

    python bench/monitor_replay.py --out bench/results/monitor_replay.json
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter
from serve_load import free_port, measure, start_server

from skinlesion.config.files import load_params
from skinlesion.labels import CLASSES
from skinlesion.progress import progress

EXTREMITIES = ("lower extremity", "upper extremity", "foot", "hand", "acral")


def colour_cast(image: Image.Image) -> Image.Image:
    """A warmer white balance: red up 10%, blue down 10% (another dermatoscope)."""
    pixels = np.asarray(image, dtype="float32") * np.array([1.1, 1.0, 0.9], dtype="float32")
    return Image.fromarray(np.clip(pixels, 0, 255).astype("uint8"))


def blur(image: Image.Image) -> Image.Image:
    """Out of focus: a Gaussian blur of radius 2 pixels."""
    return image.filter(ImageFilter.GaussianBlur(2))


def encoded(path: Path, change: Callable[[Image.Image], Image.Image] | None) -> str:
    """The image as a client sends it: the file's bytes, or the changed image as JPEG."""
    if change is None:
        return base64.b64encode(path.read_bytes()).decode()
    with Image.open(path) as image:
        changed = change(image.convert("RGB"))
    data = io.BytesIO()
    changed.save(data, "JPEG", quality=95)
    return base64.b64encode(data.getvalue()).decode()


def request_rows(test: pd.DataFrame, data_dir: Path, change: Callable | None = None) -> list[dict]:
    """One request row per test image: the image and its patient's known fields."""
    rows = []
    for row in test.itertuples():
        patient = {"age": row.age, "sex": row.sex, "localization": row.localization}
        known = {k: v for k, v in patient.items() if not pd.isna(v)}
        rows.append({"image": encoded(data_dir / row.image_path, change), **known})
    return rows


def served_records(model, rows: list[dict], chunk: int = 64) -> pd.DataFrame:
    """What the server's log would hold for ``rows``: the patient fields, the answer,
    the class probabilities and the embedding, through the pyfunc model."""
    tables = []
    for start in progress(range(0, len(rows), chunk), desc="score"):
        frame = pd.DataFrame(rows[start : start + chunk])
        answer = model.predict(frame, params={"embedding": True})
        patient = frame.drop(columns="image").reindex(columns=["age", "sex", "localization"])
        tables.append(pd.concat([patient.reset_index(drop=True), answer], axis=1))
    return pd.concat(tables, ignore_index=True)


def replay(
    pools: dict[str, pd.DataFrame],
    reference: pd.DataFrame,
    settings,
    windows: int,
    size: int,
    seed: int,
) -> dict[str, list[dict]]:
    """Per scenario: every test's score and verdict on each window."""
    from skinlesion.monitoring.drift import check_drift, monitored_columns

    rng = np.random.default_rng(seed)
    ref = monitored_columns(reference)
    found: dict[str, list[dict]] = {}
    for scenario, pool in pools.items():
        rows = []
        for _ in progress(range(windows), desc=scenario):
            chosen = rng.choice(len(pool), size=min(size, len(pool)), replace=False)
            window = monitored_columns(pool.iloc[np.sort(chosen)])
            result = check_drift(window, ref, settings, render=False)
            rows.append({c.name: {"score": c.score, "fired": c.fired} for c in result.checks})
        found[scenario] = rows
    return found


def rates(found: dict[str, list[dict]]) -> dict[str, dict]:
    """Per scenario: the share of windows flagged, each test's share, its score range."""
    summary = {}
    for scenario, rows in found.items():
        tests = rows[0].keys()
        summary[scenario] = {
            "windows": len(rows),
            "flagged": float(np.mean([any(t["fired"] for t in r.values()) for r in rows])),
            "tests": {
                name: {
                    "fired": float(np.mean([r[name]["fired"] for r in rows])),
                    "min": round(min(r[name]["score"] for r in rows), 4),
                    "median": round(float(np.median([r[name]["score"] for r in rows])), 4),
                    "max": round(max(r[name]["score"] for r in rows), 4),
                }
                for name in tests
            },
        }
    return summary


def monitor_cli(log: Path, out_dir: Path) -> dict:
    """`skinlesion monitor` over ``log`` (the real command); its monitor.json."""
    command = [
        str(Path(sys.executable).with_name("skinlesion")),
        "monitor",
        "--log",
        str(log),
        "--out-dir",
        str(out_dir),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    print(done.stdout, done.stderr[-2000:], sep="\n")
    if done.returncode != 0:
        raise SystemExit(f"skinlesion monitor failed ({done.returncode})")
    return json.loads((out_dir / "monitor.json").read_text())


def served_run(model: str, rows: list[dict], requests_: int, log: Path, work: Path) -> dict:
    """A load run against `skinlesion serve` logging to ``log``, then the monitor on it."""
    port = free_port()
    proc, startup = start_server(model, port, work / f"{log.name}-serve.log", str(log))
    bodies = [{"dataframe_records": [row]} for row in rows]
    try:
        load = measure(f"http://127.0.0.1:{port}/invocations", bodies, requests_, 4)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the log writes what it holds on the way out
        proc.wait(timeout=120)
    time.sleep(1)
    logged = sum(len(pd.read_parquet(f)) for f in log.rglob("*.parquet"))
    started = time.perf_counter()
    verdict = monitor_cli(log, work / f"{log.name}-monitor")
    return {
        "requests": load["requests"],
        "errors": load["errors"],
        "throughput_per_s": load["throughput_per_s"],
        "server_startup_s": round(startup, 1),
        "records_logged": logged,
        "monitor_s": round(time.perf_counter() - started, 1),
        "verdict": verdict["verdict"],
        "fired": verdict["fired"],
        "checks": verdict["checks"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=Path("data/split/manifest.csv"))
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--windows", type=int, default=50)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/monitor_replay"))
    parser.add_argument("--skip-served", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench/results/monitor_replay.json"))
    args = parser.parse_args()

    import mlflow.pyfunc

    from skinlesion.monitoring.reference import load_reference, served_version
    from skinlesion.tracking import configure_tracking

    params = load_params()
    settings = params.monitor
    data_dir = args.data_dir or Path(params.data.raw_dir)
    configure_tracking(params.tracking.experiment)
    served = served_version(settings.model)
    reference = load_reference(served)
    model = mlflow.pyfunc.load_model(served.uri)
    split = pd.read_csv(args.manifest)
    test = split[split["split"] == "test"].drop_duplicates("image_id").reset_index(drop=True)

    started = time.perf_counter()
    plain = served_records(model, request_rows(test, data_dir))
    pools = {
        "in_distribution": plain,
        "colour_cast": served_records(model, request_rows(test, data_dir, colour_cast)),
        "blur": served_records(model, request_rows(test, data_dir, blur)),
        "older_patients": plain[(test["age"] >= 60).to_numpy()].reset_index(drop=True),
        "extremities": plain[test["localization"].isin(EXTREMITIES).to_numpy()].reset_index(
            drop=True
        ),
    }
    scoring_s = time.perf_counter() - started
    started = time.perf_counter()
    found = replay(pools, reference, settings, args.windows, args.window, args.seed)
    replay_s = time.perf_counter() - started
    summary = rates(found)
    result = {
        "model": served.uri,
        "reference_images": len(reference),
        "pools": {name: len(pool) for name, pool in pools.items()},
        "window": args.window,
        "windows_per_scenario": args.windows,
        "thresholds": {
            **{c: t.model_dump() for c, t in settings.drift.items()},
            "embedding": settings.embedding.model_dump(),
        },
        "false_alarm_rate": summary["in_distribution"]["flagged"],
        "detection_rate": {k: v["flagged"] for k, v in summary.items() if k != "in_distribution"},
        "scenarios": summary,
        "scoring_s": round(scoring_s, 1),
        "replay_s": round(replay_s, 1),
        "predicted_mix": {
            name: pool["prediction"].value_counts(normalize=True).round(3).to_dict()
            for name, pool in pools.items()
        },
        "classes": list(CLASSES),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count()},
    }
    if not args.skip_served:
        args.work.mkdir(parents=True, exist_ok=True)
        result["served"] = {
            "in_distribution": served_run(
                settings.model, request_rows(test, data_dir), args.requests,
                args.work / "log-plain", args.work,
            ),
            "colour_cast": served_run(
                settings.model, request_rows(test, data_dir, colour_cast), args.requests,
                args.work / "log-cast", args.work,
            ),
        }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("false_alarm_rate", "detection_rate")}, indent=2))


if __name__ == "__main__":
    main()
