"""`skinlesion predict`: class probabilities for image files, optional TTA and Grad-CAM
overlays, through the model's own preprocessing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from skinlesion.labels import CLASSES
from skinlesion.model.inference import Scorer
from skinlesion.model.metadata import encode_metadata, model_inputs
from skinlesion.model.preprocessing import PREPARE_LAYER, core_of
from skinlesion.model.reliability import InputContractError, reliability_of


def load_image(path: str | Path) -> np.ndarray:
    """An image file as the model takes it: uint8 RGB at its own size (the model crops
    and resizes it itself)."""
    from skinlesion.model.preprocessing import read_image

    return read_image(Path(path).read_bytes())


def last_spatial_layer(model: Any) -> Any:
    """The last layer with a 4-D output: where Grad-CAM looks."""
    for layer in reversed(model.layers):
        shape = getattr(layer, "output", None)
        if shape is not None and len(layer.output.shape) == 4:
            return layer
    raise ValueError("the model has no spatial layer for Grad-CAM")


def grad_cam(
    model: Any, image: np.ndarray, class_index: int, metadata: np.ndarray | None = None
) -> np.ndarray:
    """Grad-CAM heatmap in 0..1 for one raw image at the target layer's resolution,
    looked for inside the classifier, on the image as the model prepares it; for an
    ensemble, inside its first member (a heatmap belongs to one network)."""
    import keras
    import tensorflow as tf

    from skinlesion.model.ensemble import is_ensemble, member, members_of

    if is_ensemble(model):
        model = member(model, members_of(model)[0])
    core = core_of(model)
    prepared = np.asarray(model.get_layer(PREPARE_LAYER)(image[None]))
    target = last_spatial_layer(core)
    probe = keras.Model(core.input, [target.output, core.output])
    meta = None if metadata is None else metadata[None]
    with tf.GradientTape() as tape:
        features, probs = probe(model_inputs(core, prepared, meta), training=False)
        score = probs[:, class_index]
    grads = tape.gradient(score, features)
    weights = tf.reduce_mean(grads, axis=(1, 2))
    cam = tf.nn.relu(tf.reduce_sum(features * weights[:, None, None, :], axis=-1))[0].numpy()
    return cam / cam.max() if cam.max() > 0 else cam


def blend(base: Image.Image, cam: np.ndarray) -> Image.Image:
    """The heatmap (jet colours) blended over an RGB image at its own size."""
    from matplotlib import colormaps

    heat = Image.fromarray(np.uint8(255 * cam)).resize(base.size, Image.BILINEAR)
    coloured = colormaps["jet"](np.asarray(heat) / 255.0)[..., :3]
    blended = 0.6 * np.asarray(base) / 255.0 + 0.4 * coloured
    return Image.fromarray(np.uint8(255 * np.clip(blended, 0, 1)))


def overlay(path: str | Path, cam: np.ndarray, out: Path) -> Path:
    """The heatmap blended over the original image, saved as PNG."""
    with Image.open(path) as img:
        base = img.convert("RGB")
    out.parent.mkdir(parents=True, exist_ok=True)
    blend(base, cam).save(out)
    return out


def predict_images(
    model: Any,
    paths: list[Path],
    tta: bool = False,
    gradcam_dir: Path | None = None,
    patient: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Per image: probabilities per class, the top class, the prediction set and referral
    (for a model that carries them) and, optionally, a Grad-CAM PNG.

    ``patient`` ({"age", "sex", "localization"}, any of them may be missing) is given to
    a model that takes metadata, for every image; without it the metadata is unknown.
    An image that breaks the model's input contract stops the call before any
    prediction (:class:`InputContractError`), or is referred when the model was trained
    with ``invalid_input: refer``, the same as the server does."""
    reliability = reliability_of(model)
    violations: list[list[str]] = [[] for _ in paths]
    if reliability is not None:
        for i, path in enumerate(paths):
            try:
                violations[i] = reliability.screen(Path(path).read_bytes())
            except InputContractError as err:
                raise InputContractError(f"{path}: {err}") from err
    images = [load_image(p) for p in paths]
    metadata = encode_metadata(pd.DataFrame([patient or {}] * len(paths)))
    scored = Scorer(model).score(images, metadata, 32, tta=tta, violations=violations)
    results = []
    for row, (path, image, meta, p) in enumerate(
        zip(paths, images, metadata, scored.probs, strict=True)
    ):
        top = int(p.argmax())
        entry: dict[str, Any] = {
            "image": str(path),
            "prediction": CLASSES[top],
            "probabilities": {c: round(float(v), 4) for c, v in zip(CLASSES, p, strict=True)},
        }
        if scored.assessment is not None:
            entry["prediction_set"] = scored.assessment.prediction_set(row)
            entry["refer"] = bool(scored.assessment.refer[row])
            entry["refer_reason"] = scored.assessment.reasons[row]
        if gradcam_dir is not None:
            cam = grad_cam(model, image, top, meta)
            entry["gradcam"] = str(overlay(path, cam, gradcam_dir / f"{Path(path).stem}.png"))
        results.append(entry)
    return results
