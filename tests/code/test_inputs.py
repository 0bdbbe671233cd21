"""The tf.data pipeline: decode once, gather oversampled rows, augment training only."""

from __future__ import annotations

import numpy as np
import pytest

from skinlesion.config.files import load_params
from skinlesion.config.schema import InputSettings
from skinlesion.data.catalog import load_catalog
from skinlesion.training.inputs import decode_images, make_dataset
from tests.helpers import ROOT

pytestmark = pytest.mark.code


def inputs(augment: dict | None = None, **fields) -> InputSettings:
    """params.yaml's input section at 32 px, images only, every augmentation off but
    those named."""
    base = load_params(ROOT / "params.yaml").input
    off = {"flip": "none", "rotation": 0, "zoom": 0, "brightness": 0, "contrast": 0}
    aug = base.augment.model_copy(update={**off, "saturation": 0, **(augment or {})})
    defaults = {"image_size": 32, "metadata": False, "metadata_dropout": 0.0}
    return base.model_copy(update={**defaults, "augment": aug, **fields})


@pytest.fixture(scope="module")
def table(synth_dir):
    frame = load_catalog(synth_dir).head(40)
    return decode_images(synth_dir, frame, inputs())


def test_decode_resizes_every_distinct_image_once(table):
    assert table.images.shape == (40, 32, 32, 3)
    assert table.images.dtype == np.uint8
    rows = table.rows([table.image_ids[3], table.image_ids[3], table.image_ids[0]])
    assert rows.tolist() == [3, 3, 0]


def test_eval_batches_are_exact_and_in_order(table):
    rows, labels = np.arange(40), np.arange(40) % 7
    settings = inputs({"rotation": 0.3, "zoom": 0.2})
    x, y = next(iter(make_dataset(table, rows, labels, 16, False, settings)))
    np.testing.assert_array_equal(x.numpy(), table.images[:16].astype("float32"))
    np.testing.assert_array_equal(y.numpy().argmax(axis=1), labels[:16])


def test_training_batches_are_augmented_and_in_range(table):
    rows, labels = np.arange(40), np.zeros(40, dtype=int)
    settings = inputs(
        {"rotation": 0.3, "zoom": 0.2, "brightness": 0.2, "contrast": 0.2, "saturation": 0.2}
    )
    x, _ = next(iter(make_dataset(table, rows, labels, 40, True, settings, seed=1)))
    x = x.numpy()
    assert x.min() >= 0.0 and x.max() <= 255.0
    assert not np.allclose(
        np.sort(x.reshape(40, -1).sum(axis=1)),
        np.sort(table.images.astype("float32").reshape(40, -1).sum(axis=1)),
    )


def test_metadata_travels_with_its_image_through_shuffling_and_dropout(table):
    """Each image's metadata row reaches the model with that image, shuffled or not, and
    dropout blanks whole rows (unknown), never parts of them."""
    n = len(table.images)
    marked = type(table)(
        images=np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None], 32, axis=1)
        .repeat(32, axis=2)
        .repeat(3, axis=3),
        image_ids=table.image_ids,
        metadata=np.repeat(np.arange(n, dtype=np.float32)[:, None] + 1, 4, axis=1),
    )
    rows, labels = np.arange(n), np.zeros(n, dtype=int)
    for training, dropout in ((False, 0.0), (True, 0.0), (True, 0.5)):
        settings = inputs(metadata=True, metadata_dropout=dropout)
        x, _ = next(iter(make_dataset(marked, rows, labels, n, training, settings, seed=3)))
        image_row = x["image"].numpy()[:, 0, 0, 0]
        meta = x["metadata"].numpy()
        kept = meta[:, 0] > 0
        np.testing.assert_array_equal(meta[kept, 0], image_row[kept] + 1)
        assert (meta[kept] == meta[kept, :1]).all() and not meta[~kept].any()
        assert kept.all() == (dropout == 0.0)
        if not training:
            np.testing.assert_array_equal(image_row, np.arange(n))
