"""What the calibration fitted on validation does to the prediction sets: each member's
conformal sets calibrated on its validation probabilities with and without the scaling,
then judged on the test part (coverage, mean set size, single-class share, and the share
of answers whose set is not one class or holds melanoma, the set part of the refer
rate). The operating point's offsets are kept in both. Writes JSON (default
``bench/results/calibration_effect.json``). Example::

    python bench/calibration_effect.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from skinlesion.config.files import load_params
from skinlesion.data.split import read_manifest
from skinlesion.evaluation.evaluate import score_frame
from skinlesion.labels import labels_of
from skinlesion.model.confidence import log_probs_of, softmax
from skinlesion.model.conformal import prediction_sets, true_class_scores
from skinlesion.model.loading import load_model
from skinlesion.model.operating_curve import MEL
from skinlesion.model.reliability import reliability_of


def set_figures(sets: np.ndarray, y: np.ndarray) -> dict[str, float]:
    sizes = sets.sum(axis=1)
    return {
        "coverage": float(sets[np.arange(len(y)), y].mean()),
        "set_size_mean": float(sizes.mean()),
        "single_class_share": float((sizes == 1).mean()),
        "set_refer_rate": float(((sizes != 1) | sets[:, MEL]).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=Path("data/split/manifest.csv"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/calibration_effect.json"))
    args = parser.parse_args()
    params = load_params()
    split = read_manifest(args.manifest).drop_duplicates("image_id")
    parts = {p: split[split["split"] == p].reset_index(drop=True) for p in ("val", "test")}
    settings = params.evaluate.model_copy(update={"tta": False})
    record = {}
    for name in params.train.models:
        model = load_model(f"models/{name}.keras")
        reliability = reliability_of(model)
        probs = {
            p: score_frame(model, f, params.data.raw_dir, settings).probs for p, f in parts.items()
        }
        y = {p: labels_of(f) for p, f in parts.items()}
        offsets = np.asarray(reliability.decision_offsets)
        rows = {}
        for kind in ("calibrated", "uncalibrated"):
            views = (
                probs
                if kind == "calibrated"
                else {
                    p: softmax(log_probs_of(reliability.uncalibrated(v)) + offsets)
                    for p, v in probs.items()
                }
            )
            scores = true_class_scores(views["val"], y["val"])
            sets = prediction_sets(scores, y["val"], views["test"], reliability.alpha)
            rows[kind] = set_figures(sets, y["test"])
        record[name] = {"temperature": float(1 / np.mean(reliability.calibration_scale)), **rows}
        print(name, json.dumps(record[name]))
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
