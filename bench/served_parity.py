"""Served answers against `evaluate`'s, on every test image, for the TensorFlow server's
model or for an export (`--runtime onnx`).

Each test image is sent as a client sends it (its file's bytes, base64, with the
patient's fields) to the pyfunc that `skinlesion serve` runs, and its answers are
compared with the ``predictions.csv`` that `evaluate` wrote for the same model:
probabilities (largest difference), decisions, prediction sets, referrals and their
reasons. With ``--runtime keras`` the model is the served one (default: params.yaml
``serve.model``). With ``--runtime onnx`` each ``--eval-dir``'s model (the file or URI its
``metrics.json`` names) is exported first, as `skinlesion export` does, and the export is
served. Writes JSON (default ``bench/results/served_parity.json``, or
``bench/results/export_parity.json`` for onnx). Example::

    python bench/served_parity.py --eval-dir reports/eval/ensemble
    python bench/served_parity.py --runtime onnx \\
        --eval-dir reports/eval/cnn reports/eval/efficientnet_lite reports/eval/ensemble
"""

from __future__ import annotations

import argparse
import base64
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skinlesion.config.files import load_params
from skinlesion.labels import CLASSES

BATCH = 64


def requests_of(rows: pd.DataFrame, data_dir: Path) -> list[pd.DataFrame]:
    """The test images as request frames of ``BATCH`` rows, as a client sends them."""
    frames = []
    for start in range(0, len(rows), BATCH):
        chunk = rows.iloc[start : start + BATCH]
        images = [
            base64.b64encode((data_dir / p).read_bytes()).decode() for p in chunk["image_path"]
        ]
        frames.append(
            pd.DataFrame(
                {
                    "image": images,
                    "age": chunk["age"].to_numpy(),
                    "sex": chunk["sex"].to_numpy(),
                    "localization": chunk["localization"].to_numpy(),
                }
            )
        )
    return frames


def compare(model: Any, evaluated: pd.DataFrame, frames: list[pd.DataFrame]) -> dict:
    """Send every request to the pyfunc ``model``; how its answers agree with evaluate's."""
    started = time.perf_counter()
    served = pd.concat([model.predict(frame) for frame in frames], ignore_index=True)
    seconds = time.perf_counter() - started
    probs = served[list(CLASSES)].to_numpy(float)
    expected = evaluated[[f"p_{c}" for c in CLASSES]].to_numpy(float)
    sets = np.array([" ".join(s) for s in served["prediction_set"]])
    return {
        "images": len(served),
        "max_probability_difference": float(np.abs(probs - expected).max()),
        "same_decision": int((probs.argmax(1) == expected.argmax(1)).sum()),
        "same_prediction_set": int((sets == evaluated["prediction_set"].to_numpy()).sum()),
        "same_refer": int((served["refer"].to_numpy() == evaluated["refer"].to_numpy()).sum()),
        "same_refer_reason": int(
            (served["refer_reason"].to_numpy() == evaluated["refer_reason"].to_numpy()).sum()
        ),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="MLflow model URI (keras; default: params serve.model)")
    parser.add_argument("--runtime", choices=["keras", "onnx"], default="keras")
    parser.add_argument(
        "--eval-dir", type=Path, nargs="+", required=True, help="evaluate's folder(s)"
    )
    parser.add_argument("--manifest", type=Path, default=Path("data/split/manifest.csv"))
    parser.add_argument("--out", type=Path, help="JSON to write (default: by runtime)")
    args = parser.parse_args()

    from skinlesion.model.loading import load_pyfunc
    from skinlesion.model.portable import TOLERANCE
    from skinlesion.promotion.registry import resolve_version
    from skinlesion.serving.exports import export_pyfunc, export_reference
    from skinlesion.tracking import configure_tracking

    params = load_params()
    configure_tracking(params.tracking.experiment)
    split = pd.read_csv(args.manifest)
    test = split[split["split"] == "test"].drop_duplicates("image_id").set_index("image_id")
    data_dir = Path(params.data.raw_dir)
    record: dict[str, Any] = {"runtime": args.runtime}
    for eval_dir in args.eval_dir:
        evaluated = pd.read_csv(eval_dir / "predictions.csv", keep_default_na=False)
        frames = requests_of(test.loc[evaluated["image_id"]].reset_index(), data_dir)
        if args.runtime == "keras":
            resolved, _ = resolve_version(args.model or params.serve.model)
            record.update(model=resolved.uri, model_version=resolved.version)
            record.update(compare(load_pyfunc(resolved.uri), evaluated, frames))
            continue
        source = json.loads((eval_dir / "metrics.json").read_text())["model"]
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            _, manifest = export_reference(source, folder, log=False)
            export_seconds = time.perf_counter() - started
            served = export_pyfunc(folder)
        record.setdefault("tolerance", TOLERANCE)
        record.setdefault("models", {})[eval_dir.name] = {
            "model": source,
            "export_seconds": round(export_seconds, 1),
            "probe_check": manifest["check"],
            **compare(served, evaluated, frames),
        }
    out = args.out or Path(
        f"bench/results/{'served' if args.runtime == 'keras' else 'export'}_parity.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
