"""Test-time augmentation (the mean over the image and its three flips, ``evaluate.tta``)
measured on the VALIDATION part for each candidate of this checkout's flow (models/ and
ensembles/), so that adopting it is decided where models are selected, never on test.

For each candidate, with and without TTA: balanced accuracy, macro AUC, melanoma
sensitivity at specificity 0.80, the refer rate and the share of single-class answers at
the model's own alpha, and the milliseconds per image of scoring (one batch size, this
host). The conformal sets were calibrated on these very images without TTA, so the
refer rate and set sizes here show the direction of the change, not the coverage a new
lesion would get. Writes JSON (default ``bench/results/tta_validation.json``). Example::

    python bench/tta_validation.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from skinlesion.config.files import load_params
from skinlesion.data.split import read_manifest
from skinlesion.evaluation.evaluate import score_frame
from skinlesion.evaluation.metrics import core_metrics
from skinlesion.labels import labels_of
from skinlesion.model.loading import load_model
from skinlesion.model.operating_curve import sensitivity_at


def candidates(params) -> dict[str, Path]:
    """Each candidate of params.yaml and its saved file in this checkout."""
    found = {m: Path("models") / f"{m}.keras" for m in params.train.models}
    found.update({e: Path("ensembles") / f"{e}.keras" for e in params.train.ensembles})
    return {name: path for name, path in found.items() if path.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=Path("data/split/manifest.csv"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/tta_validation.json"))
    args = parser.parse_args()

    params = load_params()
    frame = read_manifest(args.manifest)
    val = frame[frame["split"] == "val"].drop_duplicates("image_id").reset_index(drop=True)
    y = labels_of(val)
    results = {}
    for name, path in candidates(params).items():
        model = load_model(str(path))
        rows = {}
        for tta in (False, True):
            settings = params.evaluate.model_copy(update={"tta": tta})
            started = time.perf_counter()
            scored = score_frame(model, val, params.data.raw_dir, settings)
            seconds = time.perf_counter() - started
            core = core_metrics(y, scored.probs)
            sizes = scored.assessment.sets.sum(axis=1)
            rows["tta" if tta else "plain"] = {
                "balanced_accuracy": core["balanced_accuracy"],
                "macro_auc": core["macro_auc"],
                "mel_sensitivity_at_0.80": sensitivity_at(scored.probs, y, 0.8),
                "refer_rate": float(scored.assessment.refer.mean()),
                "single_class_share": float((sizes == 1).mean()),
                "ms_per_image": round(1000 * seconds / len(val), 2),
            }
        rows["extra_ms_per_image"] = round(
            rows["tta"]["ms_per_image"] - rows["plain"]["ms_per_image"], 2
        )
        results[name] = rows
        print(name, json.dumps(rows))
    record = {
        "split": "val",
        "images": len(val),
        "batch_size": params.evaluate.batch_size,
        "candidates": results,
        "host": {"machine": platform.machine(), "cpus": os.cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
