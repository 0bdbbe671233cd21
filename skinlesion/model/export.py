"""`skinlesion export`: a trained model written for runtimes without TensorFlow (the
folder :mod:`skinlesion.model.portable` reads), checked against the model it came from.

Why ONNX through tf2onnx: the graph must hold the preprocessing, so that a client sends
the image as it is. Tried on a model with its preprocessing (Keras 3.15, TensorFlow 2.21):

* Keras 3's ``model.export(format="onnx")`` runs tf2onnx for the TensorFlow backend and
  writes a graph with ``ScaleAndTranslate`` (the op behind TensorFlow's antialiased
  resize) left unconverted: ONNX Runtime cannot load it.
* LiteRT's converter refuses ``ScaleAndTranslate`` as a builtin (the TensorFlow ops
  delegate it would need is TensorFlow again). It does convert the portable graph below,
  but its interpreter then answers other features and NaN probabilities.
* tf2onnx on the portable graph: the same probabilities to within
  :data:`~skinlesion.model.portable.TOLERANCE`.

So the exported graph prepares images with
:func:`~skinlesion.model.preprocessing.portable_prepare_images`, the same resize written
with ops every converter knows (TensorFlow's kernel weights, its taps added in its order).
The export is then scored on probe images beside the Keras model and refused if any
probability differs by more than the tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from skinlesion.labels import CLASSES
from skinlesion.model.portable import (
    ARRAYS_FILE,
    EXPORT_DIR,
    EXPORT_FORMAT,
    GRAPH_FILE,
    MANIFEST_FILE,
    TOLERANCE,
    ExportError,
    PortableScorer,
    reliability_manifest,
)

OPSET = 18


def _graph(model: Any, feature_layer: str, path: Path) -> dict[str, Any]:
    """Convert the model's two-output probe (features, probabilities), with its portable
    preprocessing, to ONNX at ``path``; returns the inputs it takes."""
    import tensorflow as tf
    import tf2onnx

    from skinlesion.model.inference import feature_probe_of
    from skinlesion.model.metadata import METADATA_DIM, uses_metadata

    probe = feature_probe_of(model, feature_layer, portable=True)
    with_meta = uses_metadata(model)
    specs = [tf.TensorSpec((None, None, None, 3), tf.uint8, name="image")]
    if with_meta:
        specs.append(tf.TensorSpec((None, METADATA_DIM), tf.float32, name="metadata"))

    @tf.function(input_signature=specs)
    def outputs(image: Any, metadata: Any = None) -> dict[str, Any]:
        inputs = {"image": image, "metadata": metadata} if with_meta else image
        features, probs = probe(inputs, training=False)
        return {"features": features, "probs": probs}

    tf2onnx.convert.from_function(
        outputs, input_signature=specs, opset=OPSET, output_path=str(path)
    )
    return {"image": "uint8 [n, height, width, 3], any height and width",
            "metadata": METADATA_DIM if with_meta else None}  # fmt: skip


def probe_images(n: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Images to check an export on: smooth skin-toned noise at HAM10000's size and at three
    times it (a downscale whose antialiasing kernel spans several pixels). Two sizes only:
    each new size retraces the Keras side, and every promotion makes an export; the
    resize itself is checked on many sizes and crops by the tests."""
    rng = np.random.default_rng(seed)
    sizes = [(150, 200), (450, 600)]
    images = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        base = rng.uniform([120, 70, 50], [230, 170, 150], size=3)
        noise = (
            rng.normal(0, 25, size=(h, w, 3)).cumsum(axis=1) / np.sqrt(np.arange(1, w + 1))[:, None]
        )
        images.append(np.clip(base + noise, 0, 255).astype(np.uint8))
    return images


def parity(model: Any, scorer: PortableScorer, images: list[np.ndarray]) -> dict[str, Any]:
    """The Keras model and the export on the same images: the largest probability
    difference and how many decisions, sets and referrals agree."""
    from skinlesion.model.inference import Scorer

    keras_side = Scorer(model)
    n = len(images)
    metadata = np.zeros((n, scorer.metadata_dim), np.float32) if scorer.metadata_dim else None
    want, got = [], []
    for image in images:  # one at a time, as a server answers
        meta = None if metadata is None else metadata[:1]
        want.append(keras_side.score([image], meta, 1))
        got.append(scorer.score([image], meta))
    probs_w = np.concatenate([w.probs for w in want])
    probs_g = np.concatenate([g.probs for g in got])
    agree = {"decision": 0, "prediction_set": 0, "refer": 0, "refer_reason": 0}
    for w, g in zip(want, got, strict=True):
        a, b = w.assessment, g.assessment
        agree["decision"] += int(w.probs.argmax() == g.probs.argmax())
        if a is not None and b is not None:
            agree["prediction_set"] += int((a.sets == b.sets).all())
            agree["refer"] += int((a.refer == b.refer).all())
            agree["refer_reason"] += int(a.reasons == b.reasons)
    return {
        "images": n,
        "max_probability_difference": float(np.abs(probs_w - probs_g).max()) if n else 0.0,
        **{f"same_{k}": v for k, v in agree.items()},
    }


def log_export(model: Any, run_id: str, source: str) -> dict[str, Any] | None:
    """Export ``model`` and log the folder to the MLflow run ``run_id`` as ``export/``,
    where the ONNX server fetches it for every version registered from that run; None
    when the run has an export already (a run's model never changes)."""
    import tempfile

    import mlflow

    client = mlflow.MlflowClient()
    if any(a.path.endswith(MANIFEST_FILE) for a in client.list_artifacts(run_id, EXPORT_DIR)):
        return None
    with tempfile.TemporaryDirectory(prefix="skinlesion-export-") as folder:
        manifest = export_model(model, folder, source)
        client.log_artifacts(run_id, folder, EXPORT_DIR)
    return manifest


def export_model(model: Any, out: str | Path, source: str = "") -> dict[str, Any]:
    """Write ``model`` (a Keras model that carries its reliability) to the export folder
    ``out`` and check it on probe images; returns the manifest written."""
    import tf2onnx

    from skinlesion.model.ensemble import members_of
    from skinlesion.model.preprocessing import preprocessing_of
    from skinlesion.model.reliability import reliability_of

    reliability = reliability_of(model)
    if reliability is None:
        raise ExportError(
            "the model carries no reliability (saved before models did): train it again"
        )
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    inputs = _graph(model, reliability.feature_layer, folder / GRAPH_FILE)
    scalars, arrays = reliability_manifest(reliability)
    np.savez(folder / ARRAYS_FILE, **arrays)
    prepared = preprocessing_of(model)
    manifest = {
        "format": EXPORT_FORMAT,
        "classes": list(CLASSES),
        "inputs": inputs,
        "outputs": {"features": "float32 [n, d]", "probs": f"float32 [n, {len(CLASSES)}]"},
        "preprocessing": (
            {"size": prepared[0], "center_crop": prepared[1]} if prepared else "per member"
        ),
        "members": members_of(model),
        "reliability": scalars,
        "source": source,
        "converter": {"tf2onnx": tf2onnx.__version__, "opset": OPSET},
        "tolerance": TOLERANCE,
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    check = parity(model, PortableScorer(folder), probe_images())
    if check["max_probability_difference"] > TOLERANCE:
        raise ExportError(
            f"the export differs from the model by {check['max_probability_difference']:.2g} "
            f"in a probability, above the tolerance {TOLERANCE}: not written as valid"
        )
    manifest["check"] = check
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
