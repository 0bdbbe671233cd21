"""Exports for runtimes without TensorFlow: the exported preprocessing equals the model's
to the bit, JPEGs decode to TensorFlow's pixels, and an exported model answers as the
Keras model does: probabilities within the stated tolerance, the same decisions, sets,
referrals and reasons."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from skinlesion.model.portable import (
    MANIFEST_FILE,
    TOLERANCE,
    ExportError,
    PortableScorer,
    decode_image,
    read_manifest,
)
from tests.helpers import calibration_images, tiny_model

pytestmark = pytest.mark.code

SIZES = [(150, 200), (64, 64), (451, 603), (37, 120), (300, 225)]


def _images(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]


@pytest.mark.parametrize(("size", "crop"), [(64, True), (128, True), (224, True), (32, False)])
def test_the_exported_preprocessing_equals_the_models_to_the_bit(size, crop):
    """Down- and upscaling, with and without the central crop: the loop over the kernel's
    taps adds what TensorFlow's antialiased resize adds, in its order."""
    from skinlesion.model.preprocessing import portable_prepare_images, prepare_images

    for image in _images():
        want = prepare_images(image[None], size, crop).numpy()
        got = portable_prepare_images(image[None], size, crop).numpy()
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "encode",
    [
        lambda im: im.save(b := io.BytesIO(), "JPEG", quality=95) or b.getvalue(),
        lambda im: im.save(b := io.BytesIO(), "JPEG", quality=70, subsampling=0) or b.getvalue(),
        lambda im: im.save(b := io.BytesIO(), "PNG") or b.getvalue(),
    ],
    ids=["jpeg-420", "jpeg-444", "png"],
)
def test_images_decode_to_tensorflows_pixels(encode):
    from skinlesion.model.preprocessing import read_image

    for image in _images(1):
        raw = encode(Image.fromarray(image))
        np.testing.assert_array_equal(decode_image(raw), read_image(raw))


def test_bytes_that_are_no_image_are_refused_by_name():
    from skinlesion.model.preprocessing import ImageDecodeError

    with pytest.raises(ImageDecodeError, match="not a readable image"):
        decode_image(b"\xff\xd8\xffnot really a jpeg")


@pytest.fixture(scope="module")
def exported(synth_dir, tmp_path_factory):
    from skinlesion.model.export import export_model

    model = tiny_model(seed=2, size=24, metadata=True, calibration=calibration_images(synth_dir))
    folder = tmp_path_factory.mktemp("export")
    return model, folder, export_model(model, folder, "tiny.keras")


def test_an_export_is_a_graph_a_reliability_and_a_manifest(exported):
    _, folder, manifest = exported
    assert sorted(p.name for p in folder.iterdir()) == [
        MANIFEST_FILE, "model.onnx", "reliability.npz"
    ]  # fmt: skip
    assert read_manifest(folder) == json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest["inputs"]["metadata"] == 18 and manifest["source"] == "tiny.keras"
    assert manifest["preprocessing"] == {"size": 24, "center_crop": True}
    assert manifest["reliability"]["alpha"] == 0.3
    assert manifest["reliability"]["contract"]["age_max"] == 110
    assert manifest["check"]["max_probability_difference"] <= TOLERANCE


def test_the_export_answers_as_the_model_does(exported, synth_dir):
    """Images of the synthetic set as served (one at a time, with patient metadata): the
    same decisions, sets, referrals and reasons; probabilities within the tolerance."""
    from skinlesion.model.inference import Scorer

    model, folder, _ = exported
    portable, keras_side = PortableScorer(folder), Scorer(model)
    images, _ = calibration_images(synth_dir, 60)
    metadata = np.random.default_rng(0).uniform(0, 1, (len(images), 18)).astype("float32")
    for i, image in enumerate(images):
        want = keras_side.score([image], metadata[i : i + 1], 1)
        got = portable.score([image], metadata[i : i + 1])
        assert np.abs(want.probs - got.probs).max() <= TOLERANCE
        assert want.probs.argmax() == got.probs.argmax()
        np.testing.assert_array_equal(want.assessment.sets, got.assessment.sets)
        assert want.assessment.reasons == got.assessment.reasons


def test_a_model_without_reliability_or_an_unknown_format_is_refused(exported, tmp_path):
    from skinlesion.model.export import export_model

    with pytest.raises(ExportError, match="carries no reliability"):
        export_model(tiny_model(seed=1), tmp_path / "bare")
    manifest = exported[2]
    (tmp_path / "future").mkdir()
    (tmp_path / "future" / MANIFEST_FILE).write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(ExportError, match="export format 99"):
        read_manifest(tmp_path / "future")


def test_scoring_an_export_never_imports_tensorflow(exported, tmp_path):
    """What a TensorFlow-free server runs: decode, score, assess, in a fresh process."""
    import subprocess
    import sys

    _, folder, _ = exported
    image = tmp_path / "lesion.jpg"
    Image.fromarray(_images()[0]).save(image, "JPEG", quality=90)
    code = (
        "import sys, numpy as np\n"
        "from skinlesion.model.portable import PortableScorer, decode_image\n"
        f"scorer = PortableScorer({str(folder)!r})\n"
        f"scored = scorer.score([decode_image(open({str(image)!r}, 'rb').read())], None)\n"
        "assert scored.probs.shape == (1, 7) and scored.assessment is not None\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
