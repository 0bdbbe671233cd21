"""A trained model as an export for runtimes without TensorFlow, and the scorer that
answers with it: what `skinlesion serve --runtime onnx` and an offline workstation run.

An export is a folder (:mod:`skinlesion.model.export` writes it, from the Keras model):

* ``model.onnx``: the network *with its preprocessing* (raw uint8 images of any size in;
  pooled image features and calibrated probabilities out), so a client never resizes;
* ``reliability.npz``: the arrays of the model's reliability (conformal calibration scores
  and labels, class centres and whitening of the out-of-distribution distance);
* ``export.json``: the format version, classes, inputs and outputs, the preprocessing,
  the reliability's scalars (alpha, the OOD threshold, the refer policy, the input
  contract), where the model came from and the parity tolerance it was checked at.

Nothing here imports TensorFlow: images are decoded by libjpeg-turbo with TensorFlow's own
settings (fast integer DCT, smooth upsampling: the same pixels, checked on the sample) or by
Pillow (PNG and the rest), the graph runs in ONNX Runtime, and the sets and referrals are
the numpy code every path shares (:class:`skinlesion.model.reliability.Reliability`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from skinlesion.data.contract import InputContract
from skinlesion.errors import SkinlesionError
from skinlesion.labels import CLASSES
from skinlesion.model.inference import Scored
from skinlesion.model.ood import FeatureDistance
from skinlesion.model.reliability import Reliability
from skinlesion.model.servable import LesionClassifier

EXPORT_FORMAT = 1
MANIFEST_FILE = "export.json"
GRAPH_FILE = "model.onnx"
ARRAYS_FILE = "reliability.npz"
EXPORT_DIR = "export"  # where an export lives: on its model's run, in the pyfunc serving it
# Largest difference of any probability from the Keras model's on the same image that an
# export may show (checked at export, by the tests and by bench/served_parity.py): the
# preprocessing is the same to the bit, the network's float32 sums run in another order.
# Measured on the 1,281 test images: up to 6e-4 for the CNN, 7e-5 for the ensemble and
# 1e-5 for Lite0, every decision, set and referral the same.
TOLERANCE = 1e-3
BATCH_SIZE = 32
_ARRAYS = ("cal_scores", "cal_labels", "centres", "whitening")


class ExportError(SkinlesionError, ValueError):
    """An export that cannot be made or read; the message says why and what to do."""


def reliability_manifest(reliability: Reliability) -> tuple[dict[str, Any], dict[str, Any]]:
    """(scalars for ``export.json``, arrays for ``reliability.npz``) of a reliability."""
    contract = reliability.contract
    scalars = {
        "alpha": reliability.alpha,
        "ood_threshold": reliability.ood_threshold,
        "refer_melanoma": reliability.refer_melanoma,
        "invalid_input": reliability.invalid_input,
        "feature_layer": reliability.feature_layer,
        "calibration_scale": list(reliability.calibration_scale),
        "calibration_shift": list(reliability.calibration_shift),
        "decision_offsets": list(reliability.decision_offsets),
        "contract": {
            "min_width": contract.min_width,
            "min_height": contract.min_height,
            "modes": list(contract.modes),
            "age_min": contract.age_min,
            "age_max": None if np.isinf(contract.age_max) else contract.age_max,
        },
    }
    arrays = {
        "cal_scores": reliability.cal_scores,
        "cal_labels": reliability.cal_labels,
        "centres": reliability.distance.centres,
        "whitening": reliability.distance.whitening,
    }
    return scalars, arrays


def _reliability(scalars: dict[str, Any], arrays: Any) -> Reliability:
    c = scalars["contract"]
    age_max = c["age_max"] if c["age_max"] is not None else float("inf")
    return Reliability(
        alpha=float(scalars["alpha"]),
        cal_scores=np.asarray(arrays["cal_scores"], dtype="float64"),
        cal_labels=np.asarray(arrays["cal_labels"], dtype=int),
        distance=FeatureDistance(
            centres=np.asarray(arrays["centres"], dtype="float64"),
            whitening=np.asarray(arrays["whitening"], dtype="float64"),
        ),
        ood_threshold=float(scalars["ood_threshold"]),
        refer_melanoma=bool(scalars["refer_melanoma"]),
        contract=InputContract(
            int(c["min_width"]), int(c["min_height"]), tuple(c["modes"]), c["age_min"], age_max
        ),
        invalid_input=scalars["invalid_input"],
        feature_layer=str(scalars["feature_layer"]),
        calibration_scale=tuple(scalars["calibration_scale"]),
        calibration_shift=tuple(scalars["calibration_shift"]),
        decision_offsets=tuple(scalars["decision_offsets"]),
    )


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """``export.json`` of an export folder, checked for a format this code reads."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise ExportError(f"{folder} is not an export: no {MANIFEST_FILE} (skinlesion export)")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != EXPORT_FORMAT:
        raise ExportError(
            f"{path}: export format {manifest.get('format')!r}, this code reads "
            f"{EXPORT_FORMAT}; export the model again with this version"
        )
    return manifest


def decode_image(raw: bytes) -> np.ndarray:
    """An RGB uint8 image (H, W, 3) from encoded bytes, with the pixels TensorFlow's
    decoder gives: JPEG through libjpeg-turbo with its settings, anything else through
    Pillow; :class:`~skinlesion.model.preprocessing.ImageDecodeError` when it is none."""
    from PIL import Image, UnidentifiedImageError

    from skinlesion.model.preprocessing import ImageDecodeError

    if raw[:3] == b"\xff\xd8\xff":
        import simplejpeg

        try:
            return simplejpeg.decode_jpeg(raw, colorspace="RGB", fastdct=True, fastupsample=False)
        except ValueError:
            pass  # a JPEG libjpeg-turbo refuses: Pillow's word on it below
    try:
        with Image.open(io.BytesIO(raw)) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ImageDecodeError(f"not a readable image ({len(raw)} bytes)") from err


class PortableScorer:
    """An export ready to score: the ONNX session and the reliability, loaded once. Scores
    as :class:`skinlesion.model.inference.Scorer` does, without TensorFlow."""

    def __init__(self, folder: str | Path) -> None:
        import onnxruntime

        self.folder = Path(folder)
        self.manifest = read_manifest(folder)
        if tuple(self.manifest["classes"]) != CLASSES:
            raise ExportError(f"{folder}: classes {self.manifest['classes']}, not {CLASSES}")
        with np.load(self.folder / ARRAYS_FILE) as arrays:
            self.reliability = _reliability(self.manifest["reliability"], arrays)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        # ONNX Runtime's threads otherwise spin between runs, and took the cores from
        # the numpy work after each one (the referral's distances, the JSON): a server's
        # answer took 24 ms, of which the graph 5.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(
            str(self.folder / GRAPH_FILE), options, providers=["CPUExecutionProvider"]
        )
        self.metadata_dim = self.manifest["inputs"].get("metadata")

    def outputs(
        self, images: list[np.ndarray], metadata: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(features, probabilities) of raw images, consecutive images of one size batched."""
        features, probs = [], []
        start = 0
        while start < len(images):
            shape = images[start].shape
            stop = start + 1
            while stop < len(images) and stop - start < BATCH_SIZE and images[stop].shape == shape:
                stop += 1
            feed = {"image": np.stack(images[start:stop]).astype(np.uint8)}
            if self.metadata_dim:
                rows = (
                    np.zeros((stop - start, self.metadata_dim), np.float32)
                    if metadata is None
                    else metadata[start:stop]
                )
                feed["metadata"] = np.asarray(rows, dtype=np.float32)
            f, p = self.session.run(["features", "probs"], feed)
            features.append(f)
            probs.append(p)
            start = stop
        if not probs:
            width = self.reliability.distance.whitening.shape[0]
            return np.zeros((0, width)), np.zeros((0, len(CLASSES)))
        return (
            np.concatenate(features).astype("float64"),
            np.concatenate(probs).astype("float64"),
        )

    def score(
        self,
        images: list[np.ndarray],
        metadata: np.ndarray | None,
        batch_size: int = BATCH_SIZE,
        tta: bool = False,
        violations: list[list[str]] | None = None,
    ) -> Scored:
        """Probabilities, sets and referrals of raw images (no test-time augmentation: the
        served path has none)."""
        if tta:
            raise ExportError("an export scores without test-time augmentation")
        features, probs = self.outputs(list(images), metadata)
        return Scored(probs, self.reliability.assess(probs, features, violations), features)


class PortableLesionClassifier(LesionClassifier):
    """The registered model's pyfunc answers from its export: the same request and answer
    columns, images decoded with TensorFlow's pixels but without TensorFlow."""

    decode = staticmethod(decode_image)

    def load_context(self, context: Any) -> None:
        self.scorer = PortableScorer(context.artifacts[EXPORT_DIR])
