"""Sizes of the built images, as the engine reports them: the step images (CPU, GPU) and
the serving image, so that the docs' figures come from a file. Writes JSON (default
``bench/results/image_sizes.json``). Example::

    python bench/image_sizes.py steps_cpu=skinlesion:local-cpu steps_gpu=skinlesion:local-gpu \
        serving=skinlesion:local-serve
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="NAME=IMAGE: a name for the result, the image")
    parser.add_argument("--engine", default=shutil.which("docker") or shutil.which("podman"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/image_sizes.json"))
    args = parser.parse_args()
    sizes = {}
    for named in args.images:
        name, _, image = named.partition("=")
        shown = subprocess.run(
            [args.engine, "image", "inspect", "--format", "{{.Size}}|{{json .Config.Labels}}",
             image],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        size, labels = shown.stdout.strip().split("|", 1)
        sizes[name] = {
            "image": image,
            "bytes": int(size),
            "mb": round(int(size) / 1e6),
            "revision": (json.loads(labels) or {}).get("org.opencontainers.image.revision"),
        }
    record = {"images": sizes}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
