"""What `skinlesion serve` answers about inputs that are no lesion, and about the test
lesions: refusals, referrals and prediction sets of the served champion.

Starts the scoring server for a registered model (default: params.yaml ``serve.model``),
sends it each odd input alone (a 1x1 image, greyscale, CMYK and 16-bit images, random
noise, solid colours, natural photographs that ship with scikit-learn), then every image
of the manifest's test part with its patient's data, and writes, as JSON (default
``bench/results/odd_inputs.json``): each odd input's status and reason; on the test
lesions the coverage, set sizes and refer rate of the served sets; and whether the sets
and referrals equal those of the library's own scoring of the same model (``evaluate``'s
path) image by image. Example::

    python bench/odd_inputs.py --model models:/skin-lesion-classifier@champion
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import requests
from monitor_replay import request_rows
from PIL import Image
from serve_load import free_port, start_server

from skinlesion.config.files import load_params
from skinlesion.labels import CLASSES
from skinlesion.progress import progress


def encoded(image: Image.Image, fmt: str = "JPEG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def odd_inputs(lesion: Image.Image) -> dict[str, str]:
    """Inputs a lesion classifier should refuse or refer, base64-encoded."""
    from sklearn.datasets import load_sample_image

    rng = np.random.default_rng(0)
    return {
        "1x1 image": encoded(Image.new("RGB", (1, 1), (180, 120, 100))),
        "greyscale lesion": encoded(lesion.convert("L")),
        "CMYK lesion": encoded(lesion.convert("CMYK")),
        "16-bit greyscale": encoded(
            Image.fromarray(np.full((450, 600), 30000, dtype=np.uint16)), "PNG"
        ),
        "uniform noise": encoded(
            Image.fromarray(rng.integers(0, 256, (450, 600, 3), dtype=np.uint8))
        ),
        "gaussian noise around skin tone": encoded(
            Image.fromarray(
                np.clip(rng.normal((200, 150, 130), 40, (450, 600, 3)), 0, 255).astype(np.uint8)
            )
        ),
        "solid skin colour": encoded(Image.new("RGB", (600, 450), (205, 150, 125))),
        "solid black": encoded(Image.new("RGB", (600, 450), (0, 0, 0))),
        "solid white": encoded(Image.new("RGB", (600, 450), (255, 255, 255))),
        "photo: temple (china.jpg)": encoded(Image.fromarray(load_sample_image("china.jpg"))),
        "photo: flower (flower.jpg)": encoded(Image.fromarray(load_sample_image("flower.jpg"))),
    }


def ask(url: str, records: list[dict]) -> tuple[int, dict]:
    response = requests.post(url, json={"dataframe_records": records}, timeout=300)
    return response.status_code, response.json()


def test_records(manifest: Path, data_dir: Path) -> tuple[pd.DataFrame, list[dict]]:
    split = pd.read_csv(manifest)
    test = split[split["split"] == "test"].drop_duplicates("image_id").reset_index(drop=True)
    return test, request_rows(test, data_dir)


def library_answers(model: str, test: pd.DataFrame, data_dir: Path) -> list[tuple]:
    """Sets and referrals of the same model through evaluate's path."""
    from skinlesion.evaluation.evaluate import score_frame
    from skinlesion.model.loading import load_model

    settings = load_params().evaluate.model_copy(update={"tta": False})
    scored = score_frame(load_model(model), test, data_dir, settings)
    a = scored.assessment
    return [(a.prediction_set(i), bool(a.refer[i]), a.reasons[i]) for i in range(len(test))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="MLflow model URI (default: params serve.model)")
    parser.add_argument("--manifest", type=Path, default=Path("data/split/manifest.csv"))
    parser.add_argument("--data-dir", type=Path, help="images (default: params data.raw_dir)")
    parser.add_argument("--batch", type=int, default=32, help="test images per request")
    parser.add_argument("--out", type=Path, default=Path("bench/results/odd_inputs.json"))
    args = parser.parse_args()

    params = load_params()
    model = args.model or params.serve.model
    data_dir = args.data_dir or Path(params.data.raw_dir)
    test, records = test_records(args.manifest, data_dir)
    lesion = Image.open(data_dir / test["image_path"].iloc[0]).convert("RGB")
    port = free_port()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    proc, _ = start_server(model, port, args.out.with_suffix(".log"))
    url = f"http://127.0.0.1:{port}/invocations"
    odd = {}
    served: list[dict] = []
    try:
        version = requests.get(f"http://127.0.0.1:{port}/model", timeout=10).json()["version"]
        for name, image in odd_inputs(lesion).items():
            status, body = ask(url, [{"image": image}])
            answer = body["predictions"][0] if status == 200 else {}
            odd[name] = {
                "status": status,
                "refused": status == 400,
                "referred": bool(answer.get("refer")),
                "reason": body.get("message") if status != 200 else answer["refer_reason"],
                "prediction": answer.get("prediction"),
                "prediction_set": answer.get("prediction_set"),
            }
        batches = range(0, len(records), args.batch)
        for start in progress(batches, total=len(batches), desc="test images"):
            status, body = ask(url, records[start : start + args.batch])
            assert status == 200, body
            served += body["predictions"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    y = np.array([CLASSES.index(d) for d in test["dx"]])
    sets = [set(a["prediction_set"]) for a in served]
    refer = np.array([a["refer"] for a in served])
    library = library_answers(model, test, data_dir)
    same = [
        (a["prediction_set"], a["refer"], a["refer_reason"]) == lib
        for a, lib in zip(served, library, strict=True)
    ]
    ood = np.array(["out of distribution" in a["refer_reason"] for a in served])
    result = {
        "model": model,
        "version": version,
        "odd_inputs": odd,
        "odd_inputs_refused_or_referred": sum(o["refused"] or o["referred"] for o in odd.values()),
        "odd_inputs_total": len(odd),
        "test_lesions": {
            "images": len(served),
            "lesions": int(test["lesion_id"].nunique()),
            "coverage": float(np.mean([CLASSES[k] in s for k, s in zip(y, sets, strict=True)])),
            "set_size_mean": float(np.mean([len(s) for s in sets])),
            "singleton_share": float(np.mean([len(s) == 1 for s in sets])),
            "refer_rate": float(refer.mean()),
            "ood_rate": float(ood.mean()),
            "answered_accuracy": float(
                np.mean(
                    [
                        a["prediction"] == test["dx"][i]
                        for i, a in enumerate(served)
                        if not a["refer"]
                    ]
                )
            ),
            "served_equals_library": int(sum(same)),
        },
        "host": {"machine": platform.machine(), "cpus": os.cpu_count()},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
