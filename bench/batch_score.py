"""Images per second of `skinlesion score`: a registered model over a folder of images.

Links the test part's images of the manifest (with their patients' fields in a
``metadata.csv``) into a scratch folder, scores them with the model (default: params.yaml
``serve.model``, the champion of this checkout's MLflow store) through the served model's
path, and writes the throughput, the refer rate and the counts as JSON (default
``bench/results/batch_score.json``). Example::

    python bench/batch_score.py --chunk 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

from skinlesion.config.files import load_params
from skinlesion.serving.batch import score_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="MLflow model URI (default: params serve.model)")
    parser.add_argument("--manifest", type=Path, default=Path("data/split/manifest.csv"))
    parser.add_argument("--data-dir", type=Path, help="images (default: params data.raw_dir)")
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("bench/results/batch_score.json"))
    args = parser.parse_args()

    params = load_params()
    model = args.model or params.serve.model
    data_dir = (args.data_dir or Path(params.data.raw_dir)).resolve()
    split = pd.read_csv(args.manifest)
    test = split[split["split"] == "test"].drop_duplicates("image_id")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "images"
        folder.mkdir()
        for row in test.itertuples():
            (folder / Path(row.image_path).name).symlink_to(data_dir / row.image_path)
        test[["image_id", "age", "sex", "localization"]].to_csv(
            folder / "metadata.csv", index=False
        )
        started = time.perf_counter()
        result = score_folder(model, folder, Path(scratch) / "predictions.parquet", args.chunk)
        wall = time.perf_counter() - started
        table = pd.read_parquet(result.out)
    record = {
        "model": model,
        "model_version": result.model_version,
        "images": result.images,
        "chunk": args.chunk,
        "scoring_seconds": result.seconds,
        "images_per_s": round(result.images_per_s, 1),
        "wall_seconds_with_listing_and_load": round(wall, 1),
        "refused": result.errors,
        "referred": result.referred,
        "refer_rate": round(result.referred / max(result.images, 1), 3),
        "set_size_mean": round(float(table["prediction_set"].map(len).mean()), 2),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
