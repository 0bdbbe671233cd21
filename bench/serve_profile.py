"""The model's own time and where one answer's time goes, in this process, one image at a
time: for the Keras model, decoding, the graph (preprocessing included) and the whole score;
for its export, the same and each other part of the pyfunc's ``predict``, beside the whole
``predict`` (what the ONNX server runs under MLflow's scoring app). Set beside
``bench/results/serve_load.json``'s served p50, the rest is the HTTP side: the scoring
app's JSON parsing, the request frame and the answer's encoding.

The export is the served model's (default: params.yaml ``serve.model``; it must have one:
`skinlesion export --log`). Writes JSON (default ``bench/results/serve_profile.json``)::

    python bench/serve_profile.py
"""

from __future__ import annotations

import argparse
import base64
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skinlesion.config.files import load_params


def median_ms(call: Callable[[], Any], repeat: int) -> float:
    """The median of ``repeat`` timed calls of ``call`` after five untimed ones, in ms."""
    for _ in range(5):
        call()
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return round(float(np.median(seconds)) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="MLflow model URI (default: params serve.model)")
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve_profile.json"))
    args = parser.parse_args()

    from skinlesion.model.inference import Scorer
    from skinlesion.model.loading import load_model
    from skinlesion.model.metadata import encode_metadata, model_inputs
    from skinlesion.model.portable import PortableScorer, decode_image
    from skinlesion.model.preprocessing import read_image
    from skinlesion.model.servable import answer, parse_request
    from skinlesion.promotion.registry import resolve_version
    from skinlesion.serving.exports import export_pyfunc, fetch_export
    from skinlesion.tracking import configure_tracking

    params = load_params()
    configure_tracking(params.tracking.experiment)
    resolved, _ = resolve_version(args.model or params.serve.model)
    catalog = pd.read_csv(Path(params.data.raw_dir) / "HAM10000_metadata.csv").head(1)
    [raw] = [p.read_bytes() for p in Path(params.data.raw_dir).rglob(f"{catalog.image_id[0]}.jpg")]
    row = {"image": base64.b64encode(raw).decode(), "age": float(catalog.age[0]),
           "sex": catalog.sex[0], "localization": catalog.localization[0]}  # fmt: skip
    frame = pd.DataFrame([row])
    with tempfile.TemporaryDirectory() as folder:
        export = fetch_export(resolved, folder)
        scorer, model = PortableScorer(export), export_pyfunc(export)
    keras_scorer = Scorer(load_model(resolved.uri))
    image = decode_image(raw)
    _, patient, violations = parse_request(frame, scorer.reliability, decode_image)
    meta = encode_metadata(patient)
    onnx_meta = meta if scorer.metadata_dim else None
    x = model_inputs(keras_scorer.model, image[None], meta)
    features, probs = scorer.outputs([image], onnx_meta)
    scored = scorer.score([image], onnx_meta)
    parts = {
        "keras": {
            "decode": lambda: read_image(raw),
            "graph": lambda: keras_scorer.probe.predict_on_batch(x),
            "score": lambda: keras_scorer.score([image], meta, 1),
        },
        "onnx": {
            "decode": lambda: decode_image(raw),
            "parse_request": lambda: parse_request(frame, scorer.reliability, decode_image),
            "encode_metadata": lambda: encode_metadata(patient),
            "graph": lambda: scorer.outputs([image], onnx_meta),
            "reliability": lambda: scorer.reliability.assess(probs, features, violations),
            "answer_frame": lambda: answer(scored.probs, scored.assessment),
            "score": lambda: scorer.score([image], onnx_meta),
            "pyfunc_predict": lambda: model.predict(frame),
        },
    }
    record = {
        "model": resolved.uri,
        "repeat": args.repeat,
        "median_ms": {
            runtime: {name: median_ms(call, args.repeat) for name, call in calls.items()}
            for runtime, calls in parts.items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
