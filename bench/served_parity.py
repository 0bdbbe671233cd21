"""Served answers against `evaluate`'s, on every test image: the served model (default:
params.yaml ``serve.model``, the champion of this checkout's MLflow store) is loaded as the
pyfunc that `skinlesion serve` runs, each test image is sent as a client sends it (its
file's bytes, base64, with the patient's fields), and its answers are compared with the
``predictions.csv`` that `evaluate` wrote for the same model: probabilities (largest
difference), decisions, prediction sets, referrals and their reasons. Writes JSON
(default ``bench/results/served_parity.json``). Example::

    python bench/served_parity.py --eval-dir reports/eval/ensemble
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from skinlesion.config.files import load_params
from skinlesion.labels import CLASSES

BATCH = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="MLflow model URI (default: params serve.model)")
    parser.add_argument("--eval-dir", type=Path, required=True, help="evaluate's folder")
    parser.add_argument("--manifest", type=Path, default=Path("data/split/manifest.csv"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/served_parity.json"))
    args = parser.parse_args()

    import mlflow.pyfunc

    from skinlesion.serving.server import resolve
    from skinlesion.tracking import configure_tracking

    params = load_params()
    configure_tracking(params.tracking.experiment)
    uri, version = resolve(args.model or params.serve.model)
    evaluated = pd.read_csv(args.eval_dir / "predictions.csv", keep_default_na=False)
    split = pd.read_csv(args.manifest)
    test = split[split["split"] == "test"].drop_duplicates("image_id").set_index("image_id")
    rows = test.loc[evaluated["image_id"]].reset_index()
    data_dir = Path(params.data.raw_dir)
    model = mlflow.pyfunc.load_model(uri)
    started = time.perf_counter()
    answers = []
    for start in range(0, len(rows), BATCH):
        chunk = rows.iloc[start : start + BATCH]
        request = pd.DataFrame(
            {
                "image": [
                    base64.b64encode((data_dir / p).read_bytes()).decode()
                    for p in chunk["image_path"]
                ],
                "age": chunk["age"],
                "sex": chunk["sex"],
                "localization": chunk["localization"],
            }
        )
        answers.append(model.predict(request))
    served = pd.concat(answers, ignore_index=True)
    seconds = time.perf_counter() - started
    probs = served[list(CLASSES)].to_numpy(float)
    expected = evaluated[[f"p_{c}" for c in CLASSES]].to_numpy(float)
    sets = np.array([" ".join(s) for s in served["prediction_set"]])
    record = {
        "model": uri,
        "model_version": version,
        "images": len(rows),
        "max_probability_difference": float(np.abs(probs - expected).max()),
        "same_decision": int((probs.argmax(1) == expected.argmax(1)).sum()),
        "same_prediction_set": int(
            (np.array(sets) == evaluated["prediction_set"].to_numpy()).sum()
        ),
        "same_refer": int((served["refer"].to_numpy() == evaluated["refer"].to_numpy()).sum()),
        "same_refer_reason": int(
            (served["refer_reason"].to_numpy() == evaluated["refer_reason"].to_numpy()).sum()
        ),
        "seconds": round(seconds, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
