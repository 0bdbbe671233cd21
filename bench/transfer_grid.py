"""Validation balanced accuracy and minutes of the transfer model over a grid of settings.

The measured table behind ``train.efficientnet_lite``'s defaults: every combination of
image size, unfrozen stages and fine-tuning epochs, trained over several seeds on the
flow's own oversampled manifest (``dvc repro oversample`` first), judged on VALIDATION
only, as the flow selects. Each run is the real training (``train_model``) with the
checkpoints and MLflow store in a scratch folder. Writes JSON (default
``bench/results/transfer_grid.json``) after every run, so a long grid can be read early.
Example::

    python bench/transfer_grid.py --sizes 128 160 --stages 1 2 --epochs 4 --seeds 0 1 \
        --set ema_momentum=0.99
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import yaml


def run_one(params: dict, settings: dict, seed: int, manifest: Path, scratch: Path) -> dict:
    from skinlesion.config.parse import parse_params
    from skinlesion.training.lifecycle import train_model

    trial = copy.deepcopy(params)
    trial["train"]["efficientnet_lite"].update(settings)
    trial["train"].update(seed=seed, checkpoint_dir=str(scratch / "ckpt"))
    started = time.perf_counter()
    result = train_model(
        "efficientnet_lite",
        manifest,
        trial["data"]["raw_dir"],
        scratch / "model.keras",
        scratch / "report",
        parse_params(trial),
        log_model=False,
    )
    return {
        **settings,
        "seed": seed,
        "val_balanced_accuracy": round(result.val_balanced_accuracy, 4),
        "val_mel_recall": round(result.val_mel_recall, 4),
        "epochs_run": result.epochs_run,
        "minutes": round((time.perf_counter() - started) / 60, 2),
    }


def summarise(runs: list[dict], keys: list[str]) -> list[dict]:
    """Mean and spread over seeds per combination."""
    table = []
    for combo, group in itertools.groupby(
        sorted(runs, key=lambda r: [r[k] for k in keys]), key=lambda r: [r[k] for k in keys]
    ):
        group = list(group)
        scores = [r["val_balanced_accuracy"] for r in group]
        table.append(
            {
                **dict(zip(keys, combo, strict=True)),
                "seeds": len(group),
                "val_balanced_accuracy_mean": round(statistics.mean(scores), 4),
                "val_balanced_accuracy_min": min(scores),
                "val_balanced_accuracy_max": max(scores),
                "minutes_mean": round(statistics.mean(r["minutes"] for r in group), 2),
            }
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--manifest", type=Path, default=Path("data/oversampled/manifest.csv"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[128])
    parser.add_argument("--stages", type=int, nargs="+", default=[2])
    parser.add_argument("--epochs", type=int, nargs="+", default=[8], help="fine-tuning epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="change train.efficientnet_lite keys for every run (YAML values)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/transfer_grid.json"))
    args = parser.parse_args()

    params = yaml.safe_load(args.params.read_text())
    for item in args.set:
        key, _, value = item.partition("=")
        params["train"]["efficientnet_lite"][key] = yaml.safe_load(value)
    keys = ["image_size", "fine_tune_stages", "fine_tune_epochs"]
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
        for size, stages, epochs, seed in itertools.product(
            args.sizes, args.stages, args.epochs, args.seeds
        ):
            settings = dict(zip(keys, (size, stages, epochs), strict=True))
            scratch = Path(folder) / f"run{len(runs)}"
            runs.append(run_one(params, settings, seed, args.manifest, scratch))
            print(json.dumps(runs[-1]), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(
                json.dumps(
                    {
                        "cpu_count": os.cpu_count(),
                        "platform": platform.platform(),
                        "base": params["train"]["efficientnet_lite"],
                        "table": summarise(runs, keys),
                        "runs": runs,
                    },
                    indent=2,
                )
                + "\n"
            )


if __name__ == "__main__":
    main()
