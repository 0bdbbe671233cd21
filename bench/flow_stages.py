"""Wall time of each stage of the local flow, run one by one through DVC.

Runs ``dvc repro --force --single-item STAGE`` for every stage of ``dvc.yaml`` in order, in
this checkout, and writes the seconds per stage as JSON (default
``bench/results/flow_stages-<device>.json``). Needs the raw data at params.yaml
``data.raw_dir`` (``make data``). Example::

    python bench/flow_stages.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path


def dvc_stages() -> list[str]:
    """Every stage of dvc.yaml in its order, ``foreach`` items expanded (train@cnn, ...)."""
    listed = subprocess.run(
        ["dvc", "stage", "list", "--name-only"], check=True, capture_output=True, text=True
    )
    return listed.stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="+", help="default: every stage of dvc.yaml")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    env = {**os.environ, "SKINLESION_PROGRESS": "0"}
    timings: dict[str, float] = {}
    for stage in args.stages or dvc_stages():
        start = time.perf_counter()
        subprocess.run(["dvc", "repro", "--force", "--single-item", stage], check=True, env=env)
        timings[stage] = round(time.perf_counter() - start, 1)
        print(json.dumps({"stage": stage, "seconds": timings[stage]}), flush=True)
    device = "gpu" if os.environ.get("NVIDIA_VISIBLE_DEVICES") else "cpu"
    out = args.out or Path(__file__).parent / "results" / f"flow_stages-{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
                "stages_seconds": timings,
                "total_seconds": round(sum(timings.values()), 1),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
