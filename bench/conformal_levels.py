"""What the prediction sets cost at other levels: coverage, set size and referrals of a
trained model's sets on the test part at several miscoverage levels ``alpha``.

The model's calibration scores are fixed at training (on validation); only the level
changes here, which is what `train.reliability.alpha` would change. Reads the test part
of the manifest, scores it once (the library's own path) and writes, per alpha and per
model, overall and per-class coverage, mean set size, singleton share, refer rate and
the accuracy of the answers not referred, as JSON (default
``bench/results/conformal_levels.json``). Example::

    python bench/conformal_levels.py --models models/cnn.keras models/efficientnet_lite.keras
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from skinlesion.config.files import load_params
from skinlesion.data.split import read_manifest
from skinlesion.evaluation.coverage import conformal_metrics
from skinlesion.evaluation.evaluate import score_frame
from skinlesion.labels import labels_of
from skinlesion.model.loading import load_model
from skinlesion.model.reliability import reliability_of

# The figures of skinlesion.evaluation.coverage reported per level, and their decimals.
FIGURES = {
    "coverage": 3,
    "set_size_mean": 2,
    "singleton_share": 3,
    "refer_rate": 3,
    "answered_accuracy": 3,
}


def _rounded(value: float, places: int = 3) -> float | None:
    """``value`` to ``places``; None for a figure with nothing to measure (NaN)."""
    return None if value != value else round(float(value), places)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, default=Path("data/split/manifest.csv"))
    parser.add_argument("--alphas", nargs="+", type=float, default=[0.05, 0.1, 0.2, 0.3])
    parser.add_argument("--out", type=Path, default=Path("bench/results/conformal_levels.json"))
    args = parser.parse_args()

    params = load_params()
    settings = params.evaluate.model_copy(update={"tta": False})
    split = read_manifest(args.manifest)
    test = split[split["split"] == "test"].drop_duplicates("image_id").reset_index(drop=True)
    y = labels_of(test)
    results = {}
    for path in args.models:
        model = load_model(path)
        scored = score_frame(model, test, Path(params.data.raw_dir), settings)
        reliability = reliability_of(model)
        features = scored.features
        groups = test["lesion_id"].astype(str).to_numpy()
        levels = []
        for alpha in args.alphas:
            assessed = dataclasses.replace(reliability, alpha=alpha).assess(scored.probs, features)
            figures = conformal_metrics(y, scored.probs, assessed, groups, alpha, 0, 0)
            levels.append(
                {
                    "alpha": alpha,
                    **{key: _rounded(figures[key], places) for key, places in FIGURES.items()},
                    "coverage_by_class": {
                        c: _rounded(v) for c, v in figures["coverage_by_class"].items()
                    },
                }
            )
        results[path.stem] = levels
    record = {"images": len(test), "lesions": int(test["lesion_id"].nunique()), "models": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
