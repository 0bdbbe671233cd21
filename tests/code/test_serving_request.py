"""The served model's request parsing and the preprocessing a saved model carries, without
a server: what a row may hold, and that a saved model prepares an image exactly as
training's input pipeline does."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skinlesion.model.servable import RequestError, answer, parse_request

pytestmark = pytest.mark.code


def _jpeg(width: int = 40, height: int = 30) -> str:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(width).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_a_row_with_every_field_and_one_with_none_are_read():
    frame = pd.DataFrame(
        {
            "image": [_jpeg(), _jpeg(50, 20)],
            "age": [61, None],
            "sex": [" Female", pd.NA],
            "localization": ["BACK", None],
        }
    )
    images, patient, violations = parse_request(frame)
    assert violations == [[], []]  # no contract given: nothing checked
    assert [i.shape for i in images] == [(30, 40, 3), (20, 50, 3)]
    assert patient["sex"].iloc[0] == "female" and pd.isna(patient["sex"].iloc[1])
    assert patient["localization"].iloc[0] == "back" and pd.isna(patient["localization"].iloc[1])
    assert patient["age"].iloc[0] == 61 and np.isnan(patient["age"].iloc[1])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"image": base64.b64encode(b"plain text").decode()}, "row 0: 'image' is not a readable"),
        ({"image": "%%%"}, "not valid base64"),
        ({"image": ""}, "must be a base64-encoded JPEG or PNG"),
        ({"image": None}, "must be a base64-encoded JPEG or PNG"),
        ({"image": "IMG", "sex": "robot"}, "sex 'robot' is not one of: male, female"),
        ({"image": "IMG", "localization": "elbow pit"}, "localization 'elbow pit'"),
        ({"image": "IMG", "age": -3}, "row 0: age is not a number of years in 0..inf.*got -3"),
        ({"image": "IMG", "age": "old"}, "not a number of years.*got 'old'"),
        ({"age": 40}, "no 'image' column"),
    ],
)
def test_bad_rows_are_refused_with_the_row_and_the_field(row, message):
    row = {k: (_jpeg() if v == "IMG" else v) for k, v in row.items()}
    with pytest.raises(RequestError, match=message):
        parse_request(pd.DataFrame([row]))


def test_the_age_range_is_the_one_validation_let_through(settings):
    """The range travels in the model's input contract, from ``validate``: one source."""
    from types import SimpleNamespace

    from skinlesion.data.contract import InputContract

    bounds = settings.validate_
    model = SimpleNamespace(contract=InputContract.of(bounds), screen=lambda raw: [])
    oldest = {"image": _jpeg(), "age": bounds.age_max}
    _, patient, _ = parse_request(pd.DataFrame([oldest]), model)
    assert patient["age"].iloc[0] == bounds.age_max
    too_old = {"image": _jpeg(), "age": bounds.age_max + 1}
    expected = f"in {bounds.age_min:g}..{bounds.age_max:g}, the range the model was trained on"
    with pytest.raises(RequestError, match=expected):
        parse_request(pd.DataFrame([too_old]), model)


def test_the_answer_is_the_top_class_and_every_probability():
    probs = np.array([[0.1, 0.1, 0.1, 0.1, 0.5, 0.05, 0.05], [0, 0, 0, 0, 0, 1.0, 0]])
    table = answer(probs)
    assert table["prediction"].tolist() == ["mel", "nv"]
    assert list(table.columns) == ["prediction", "akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


@pytest.mark.parametrize("center_crop", [True, False])
def test_a_saved_model_prepares_images_as_training_does(synth_dir, settings, tmp_path, center_crop):
    """The same values into the network, from the training cache or from raw images of
    several sizes through the saved model's first layer."""
    import keras

    from skinlesion.data.catalog import load_catalog
    from skinlesion.model.preprocessing import (
        PREPARE_LAYER,
        read_image,
        register,
        with_preprocessing,
    )
    from skinlesion.training.inputs import decode_images

    inputs = settings.input.model_copy(update={"image_size": 24, "center_crop": center_crop})
    frame = load_catalog(synth_dir).head(4)
    cached = decode_images(synth_dir, frame, inputs)
    identity = keras.Sequential([keras.Input((24, 24, 3)), keras.layers.Identity()])
    with_preprocessing(identity, 24, center_crop).save(tmp_path / "m.keras")
    register()
    saved = keras.models.load_model(tmp_path / "m.keras")
    for row, path in enumerate(frame["image_path"]):
        raw = read_image((synth_dir / path).read_bytes())
        prepared = np.asarray(saved.get_layer(PREPARE_LAYER)(raw[None]))[0]
        np.testing.assert_array_equal(prepared, cached.images[row].astype("float32"))
