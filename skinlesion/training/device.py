"""Where training runs: every visible GPU through ``MirroredStrategy`` (the batch size is
scaled by replicas), mixed precision on GPUs; plain CPU otherwise.

``SKINLESION_STAND_IN_GPUS=N`` splits the CPU into N logical devices that stand in for a
node's GPUs: ``MirroredStrategy`` over them, and every ``auto`` switch resolved as on an
N-GPU node (mixed precision on, no feature cache). It exists so that the cluster profile
runs on a host without GPUs (tests/model/test_cluster_profile.py): the per-replica batch,
the distributed datasets and the checkpoints take the multi-replica path for real."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal

from skinlesion.errors import SkinlesionError

STAND_IN_GPUS = "SKINLESION_STAND_IN_GPUS"


class DeviceError(SkinlesionError, RuntimeError):
    """The stand-in devices cannot be set up as asked."""


@dataclass(frozen=True)
class Device:
    strategy: Any
    replicas: int
    gpus: int  # GPUs, or the logical CPU devices standing in for them
    mixed_precision: bool


def stand_in_gpus() -> int:
    """How many logical CPU devices stand in for GPUs (0: none, the normal case)."""
    value = os.environ.get(STAND_IN_GPUS, "0") or "0"
    if not value.isdigit():
        raise DeviceError(f"{STAND_IN_GPUS}={value!r}: give a whole number of devices")
    return int(value)


def _stand_in_devices(count: int) -> list[str]:
    """The CPU split into ``count`` logical devices; TensorFlow allows this only before its
    runtime starts, so a process that already ran TensorFlow must have split it the same."""
    import tensorflow as tf

    [cpu] = tf.config.list_physical_devices("CPU")
    with suppress(RuntimeError):  # runtime started: fine if it was split this way before
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) != count:
        raise DeviceError(
            f"{STAND_IN_GPUS}={count}, but TensorFlow started with {len(devices)} CPU "
            "device(s): set it before the process first uses TensorFlow"
        )
    return devices


def select_device(mixed_precision: Literal["auto"] | bool) -> Device:
    """MirroredStrategy over all GPUs (or their stand-ins), else the default (CPU)
    strategy. ``auto`` turns float16 compute on exactly when there is a GPU."""
    import tensorflow as tf

    stand_ins = stand_in_gpus()
    if stand_ins:
        strategy = tf.distribute.MirroredStrategy(_stand_in_devices(stand_ins))
        gpus = stand_ins
    else:
        found = tf.config.list_physical_devices("GPU")
        for gpu in found:
            tf.config.experimental.set_memory_growth(gpu, True)
        strategy = tf.distribute.MirroredStrategy() if found else tf.distribute.get_strategy()
        gpus = len(found)
    mixed = bool(gpus) if mixed_precision == "auto" else bool(mixed_precision)
    return Device(strategy, strategy.num_replicas_in_sync, gpus, mixed)


@contextmanager
def precision_policy(mixed: bool) -> Iterator[str]:
    """Mixed precision for the duration of a block only (Keras's policy is global); yields
    the compute dtype."""
    import keras

    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    try:
        yield keras.mixed_precision.global_policy().compute_dtype
    finally:
        keras.mixed_precision.set_global_policy(previous)


def float32_copy(model: Any) -> Any:
    """``model`` rebuilt with every layer computing in float32, holding the same weights.

    Mixed precision is for training on GPUs. The model leaves training in float32: the
    calibration, the operating point and the reliability are fitted on what it will
    compute when it is evaluated and served, on CPU nodes, where float16 is emulated
    (ResNet152V2: 8 times slower here) and rounds differently."""
    import keras

    def as_float32(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy":
                return {**node, "config": {**node["config"], "name": "float32"}}
            return {key: as_float32(value) for key, value in node.items()}
        if isinstance(node, list):
            return [as_float32(value) for value in node]
        return node

    with precision_policy(False):
        config = as_float32(keras.saving.serialize_keras_object(model))
        copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy
