"""The cluster's EfficientNet-Lite recipe against the CPU default, both trained here.

The cluster profile (``cluster.overrides``) fine-tunes Lite0 in three phases on augmented
images: the head, the top stages, then every layer (``full_epochs``). The CPU default
trains only the head and the top two stages, on frozen features computed once, without
augmentation. This benchmark runs both through the real training (``train_model``) on the
flow's oversampled manifest (``dvc repro oversample`` first), at one reduced image side,
and records for each:

- validation balanced accuracy and melanoma recall after every epoch, with its phase and
  minutes (what the run selects on);
- the selected model's test figures (``evaluate_model``), read once at the end, as the
  flow's evaluate step does.

Only sizes shrink: the cluster recipe keeps its phases, learning rates, patience and
on-the-fly augmentation (``cache_features: false``, as on a GPU); ``--full-epochs`` caps
phase 3 to what the host's time allows. Writes JSON after every epoch, so a long run can
be read early. Example::

    python bench/phase3.py --size 112 --full-epochs 12
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from skinlesion.config.files import load_params
from skinlesion.config.parse import for_cluster, parse_params


def recipes(params_path: Path, size: int, full_epochs: int) -> dict[str, dict[str, Any]]:
    """The two recipes as whole params mappings, differing only in the model's section."""
    params = load_params(params_path)
    local = params.raw()
    local["train"]["efficientnet_lite"]["image_size"] = size
    cluster_lite = for_cluster(params).raw()["train"]["efficientnet_lite"]
    cluster_lite.update(image_size=size, cache_features=False, full_epochs=full_epochs)
    clustered = json.loads(json.dumps(local))
    clustered["train"]["efficientnet_lite"] = cluster_lite
    return {"cpu_default": local, "cluster_phase3": clustered}


class EpochLog:
    """Each epoch's validation figures with its phase and minutes, written as they come.
    A phase restarts Keras's epoch count, which is how the next phase is recognised
    (early stopping may end one before its planned count)."""

    def __init__(self, phases: list[str], write: Any) -> None:
        self.phases, self.write = phases, write
        self.rows: list[dict[str, Any]] = []
        self.phase = 0
        self.last = time.perf_counter()

    def __call__(self, epoch: int, logs: dict[str, Any]) -> None:
        if self.rows and epoch <= self.rows[-1]["phase_epoch"]:
            self.phase = min(self.phase + 1, len(self.phases) - 1)
        now = time.perf_counter()
        self.rows.append(
            {
                "phase": self.phases[self.phase],
                "phase_epoch": epoch,
                "val_balanced_accuracy": round(float(logs["val_balanced_accuracy"]), 4),
                "val_mel_recall": round(float(logs["val_mel_recall"]), 4),
                "minutes": round((now - self.last) / 60, 2),
            }
        )
        self.last = now
        self.write()


def planned_phases(section: dict[str, Any]) -> list[str]:
    """The recipe's phases in order (skinlesion.training.recipes.efficientnet_lite)."""
    phases = ["head"]
    phases += ["top"] if section["fine_tune_epochs"] else []
    return phases + (["full"] if section["full_epochs"] else [])


def run_recipe(
    name: str,
    params: dict[str, Any],
    manifest: Path,
    scratch: Path,
    report: dict[str, Any],
    write: Any,
) -> None:
    """Train one recipe, logging each epoch, then evaluate its selected model on test."""
    from skinlesion.evaluation.evaluate import evaluate_model
    from skinlesion.training.lifecycle import train_model

    section = params["train"]["efficientnet_lite"]
    params["train"].update(checkpoint_dir=str(scratch / "ckpt"), models=["efficientnet_lite"])
    params["train"]["ensembles"] = {}
    typed = parse_params(params)
    entry: dict[str, Any] = {"settings": section, "epochs": []}
    report["recipes"][name] = entry
    log = EpochLog(planned_phases(section), write)
    entry["epochs"] = log.rows
    started = time.perf_counter()
    result = train_model(
        "efficientnet_lite",
        manifest,
        params["data"]["raw_dir"],
        scratch / "model.keras",
        scratch / "report",
        typed,
        on_epoch=log,
        log_model=False,
    )
    entry["train_minutes"] = round((time.perf_counter() - started) / 60, 2)
    entry["selected"] = {
        "val_balanced_accuracy": round(result.val_balanced_accuracy, 4),
        "val_mel_recall": round(result.val_mel_recall, 4),
        "epochs_run": result.epochs_run,
    }
    metrics = evaluate_model(
        scratch / "model.keras", params["data"]["raw_dir"], typed, manifest=manifest
    ).metrics
    entry["test"] = {
        "balanced_accuracy": round(metrics["balanced_accuracy"], 4),
        "macro_auc": round(metrics["macro_auc"], 4),
        "mel_sensitivity": round(metrics["melanoma"]["sensitivity"], 4),
        "mel_specificity": round(metrics["melanoma"]["specificity"], 4),
    }
    full = [r for r in log.rows if r["phase"] == "full"]
    if full:
        entry["minutes_per_full_epoch"] = round(sum(r["minutes"] for r in full) / len(full), 2)
    write()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--manifest", type=Path, default=Path("data/oversampled/manifest.csv"))
    parser.add_argument("--size", type=int, default=112, help="image side of both recipes")
    parser.add_argument("--full-epochs", type=int, default=12, help="phase 3 epochs (cluster: 30)")
    parser.add_argument(
        "--only", choices=["cpu_default", "cluster_phase3"], nargs="*", help="run these only"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/phase3.json"))
    args = parser.parse_args()

    report: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "image_size": args.size,
        "recipes": {},
    }

    def write() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as folder:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
        for name, params in recipes(args.params, args.size, args.full_epochs).items():
            if args.only and name not in args.only:
                continue
            run_recipe(name, params, args.manifest, Path(folder) / name, report, write)


if __name__ == "__main__":
    main()
