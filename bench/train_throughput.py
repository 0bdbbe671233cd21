"""Throughput of the input pipeline alone and of training steps, per model and image size.

Writes JSON (default ``bench/results/train_throughput-<device>.json``). Uses the real data
when a HAM10000 folder is given, else a synthetic set it generates. Example::

    python bench/train_throughput.py --data-dir ../shared/data/ham10000 --sizes 64 128 \\
        --models cnn resnet152v2 --steps 20
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from skinlesion.config.files import load_params
from skinlesion.data.catalog import load_catalog
from skinlesion.data.synth import make_synthetic_dataset
from skinlesion.labels import labels_of
from skinlesion.model.metadata import metadata_width, model_inputs
from skinlesion.model.networks import build_backbone, build_cnn, build_head, build_resnet152v2
from skinlesion.training.inputs import decode_images, make_dataset


def _rate(n_items: int, seconds: float) -> float:
    return round(n_items / seconds, 1) if seconds > 0 else float("nan")


def bench_pipeline(table, rows, labels, batch, settings, steps) -> dict[str, float]:
    """Images/s that the tf.data pipeline delivers, augmented (train) and plain (eval)."""
    out = {}
    for training in (True, False):
        ds = make_dataset(table, rows, labels, batch, training, settings).repeat()
        it = iter(ds)
        next(it)  # warm-up: graph tracing
        start = time.perf_counter()
        for _ in range(steps):
            next(it)
        out["pipeline_train_img_s" if training else "pipeline_eval_img_s"] = _rate(
            steps * batch, time.perf_counter() - start
        )
    return out


def bench_training(model, table, rows, labels, batch, settings, steps) -> dict[str, float]:
    """Images/s of full training steps (pipeline included) and of prediction."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    ds = make_dataset(table, rows, labels, batch, True, settings).repeat()
    model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)  # warm-up
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    train_rate = _rate(steps * batch, time.perf_counter() - start)
    n = batch * 2
    x = model_inputs(model, table.images[:n].astype("float32"), table.metadata[:n])
    model.predict(x, batch_size=batch, verbose=0)  # warm-up
    start = time.perf_counter()
    model.predict(x, batch_size=batch, verbose=0)
    return {
        "train_img_s": train_rate,
        "predict_img_s": _rate(n, time.perf_counter() - start),
        "params": int(model.count_params()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="HAM10000 folder (default: synthetic)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[64])
    parser.add_argument("--models", nargs="+", default=["cnn", "resnet152v2"])
    parser.add_argument("--images", type=int, default=1024, help="images to decode")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import tensorflow as tf

    params = load_params(args.params)
    gpus = tf.config.list_physical_devices("GPU")
    device = "gpu" if gpus else "cpu"
    data_dir = args.data_dir
    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory()
        data_dir = Path(tmp.name) / "synth"
        make_synthetic_dataset(data_dir, n_images=min(args.images, 512), seed=0)
    frame = load_catalog(data_dir).dropna(subset=["image_path"]).head(args.images)
    results = []
    for size in args.sizes:
        settings = params.input.model_copy(update={"image_size": size})
        start = time.perf_counter()
        table = decode_images(data_dir, frame, settings)
        decode_rate = _rate(len(frame), time.perf_counter() - start)
        rows = np.arange(len(table.image_ids))
        labels = labels_of(pd.DataFrame({"dx": frame["dx"].to_numpy()}))
        base = {"image_size": size, "batch": args.batch, "decode_img_s": decode_rate}
        base.update(bench_pipeline(table, rows, labels, args.batch, settings, args.steps))
        for name in args.models:
            cfg = params.train.model(name)
            meta = metadata_width(settings.metadata)
            if params.train.recipe_of(name) == "cnn":
                model = build_cnn(cfg, size, metadata_dim=meta)
            else:
                backbone = build_backbone("none", size)
                backbone.trainable = False
                head = build_head(cfg, 2048, metadata_dim=meta)
                model = build_resnet152v2(backbone, head, size, metadata_dim=meta)
            entry = {**base, "model": name}
            entry.update(
                bench_training(model, table, rows, labels, args.batch, settings, args.steps)
            )
            print(json.dumps(entry), flush=True)
            results.append(entry)
    out = args.out or Path(__file__).parent / "results" / f"train_throughput-{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "device": device,
        "gpus": [g.name for g in gpus],
        "cpu_count": __import__("os").cpu_count(),
        "platform": platform.platform(),
        "tensorflow": tf.__version__,
        "data": "real" if args.data_dir else "synthetic",
        "results": results,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
