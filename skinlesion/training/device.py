"""Where training runs: every visible GPU through ``MirroredStrategy`` (the batch size is
scaled by replicas), mixed precision on GPUs; plain CPU otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Device:
    strategy: Any
    replicas: int
    gpus: int
    mixed_precision: bool


def select_device(mixed_precision: Literal["auto"] | bool) -> Device:
    """MirroredStrategy over all GPUs, else the default (CPU) strategy. ``auto`` turns
    float16 compute on exactly when there is a GPU."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    strategy = tf.distribute.MirroredStrategy() if gpus else tf.distribute.get_strategy()
    mixed = bool(gpus) if mixed_precision == "auto" else bool(mixed_precision)
    return Device(strategy, strategy.num_replicas_in_sync, len(gpus), mixed)


@contextmanager
def precision_policy(mixed: bool) -> Iterator[None]:
    """Mixed precision for the duration of a run only (Keras's policy is global)."""
    import keras

    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
