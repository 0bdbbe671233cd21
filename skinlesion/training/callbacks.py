"""Keras callbacks of a training phase. Built by functions, so that Keras is imported
only when a model is trained."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from skinlesion.labels import CLASSES

MEL = CLASSES.index("mel")


def validation_metrics(val_data: Any, val_labels: np.ndarray) -> Any:
    """Adds val_balanced_accuracy and val_mel_recall to the epoch logs (runs first, so
    early stopping, the schedule and the checkpoint see them)."""
    import keras
    from sklearn.metrics import balanced_accuracy_score, recall_score

    class ValidationMetrics(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            predicted = self.model.predict(val_data, verbose=0).argmax(axis=1)
            logs = logs if logs is not None else {}
            logs["val_balanced_accuracy"] = float(balanced_accuracy_score(val_labels, predicted))
            logs["val_mel_recall"] = float(
                recall_score(val_labels, predicted, labels=[MEL], average="macro", zero_division=0)
            )

    return ValidationMetrics()


def after_epoch(action: Callable[[], None]) -> Any:
    """Runs ``action`` after each epoch (placed last: after every file is written)."""
    import keras

    class AfterEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            action()

    return AfterEpoch()


def epoch_hook(action: Callable[[int, dict[str, Any]], None]) -> Any:
    """Calls ``action(epoch, logs)`` after each epoch; placed last, it sees the validation
    metrics and may stop training by raising (a search's pruner)."""
    import keras

    class EpochHook(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            action(epoch, dict(logs or {}))

    return EpochHook()


def mlflow_epochs(prefix: str) -> Any:
    """Per-epoch metrics to MLflow, with the epoch as step."""
    import keras
    import mlflow

    class MlflowEpochs(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.started = time.perf_counter()

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            metrics = {f"{prefix}{k}": float(v) for k, v in (logs or {}).items() if np.isscalar(v)}
            metrics[f"{prefix}epoch_seconds"] = time.perf_counter() - self.started
            mlflow.log_metrics(metrics, step=epoch)

    return MlflowEpochs()


def best_keeper(path: Path, monitor: str) -> Any:
    """Keeps the best epoch's weights on disk with its score, surviving a resume."""
    import keras

    class BestKeeper(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.meta = path.with_suffix(".json")
            state = json.loads(self.meta.read_text()) if self.meta.is_file() else {}
            self.best = float(state.get("value", -np.inf))
            self.best_epoch = int(state.get("epoch", -1))
            self.best_logs: dict[str, float] = state.get("logs", {})

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            value = float((logs or {}).get(monitor, -np.inf))
            if value > self.best:
                self.best, self.best_epoch = value, epoch
                self.best_logs = {k: float(v) for k, v in (logs or {}).items() if np.isscalar(v)}
                self.model.save_weights(path)
                self.meta.write_text(
                    json.dumps({"value": value, "epoch": epoch, "logs": self.best_logs})
                )

    return BestKeeper()
