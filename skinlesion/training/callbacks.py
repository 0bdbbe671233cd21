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
    """Every validation figure of an epoch, from one prediction pass: val_loss,
    val_accuracy, val_macro_auc (one-vs-rest, over the classes validation holds),
    val_balanced_accuracy and val_mel_recall. Runs first, so that early stopping, the
    schedule and the checkpoint see them.

    Keras's own validation pass (``fit(validation_data=...)``) is not used: under
    ``MirroredStrategy`` it fails on a last batch that does not split evenly across the
    replicas (Keras 3.15, TensorFlow 2.21), and it would be a second pass over the same
    images; ``predict`` handles uneven batches."""
    import keras
    from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score

    class ValidationMetrics(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            probs = np.asarray(self.model.predict(val_data, verbose=0), dtype="float64")
            predicted = probs.argmax(axis=1)
            aucs = [
                roc_auc_score(val_labels == k, probs[:, k])
                for k in range(probs.shape[1])
                if 0 < int((val_labels == k).sum()) < len(val_labels)
            ]
            chosen = probs[np.arange(len(val_labels)), val_labels]
            logs = logs if logs is not None else {}
            logs["val_loss"] = float(-np.log(np.clip(chosen, 1e-7, 1.0)).mean())
            logs["val_accuracy"] = float((predicted == val_labels).mean())
            logs["val_macro_auc"] = float(np.mean(aucs)) if aucs else float("nan")
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
    """Per-epoch metrics to MLflow, with the epoch as step, and the epoch's seconds and
    optimizer steps (with several replicas, steps times the global batch covers the
    training images once: a per-replica batch mistaken for the global one doubles them)."""
    import keras
    import mlflow

    class MlflowEpochs(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.started = time.perf_counter()
            self.steps = 0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.started = time.perf_counter()
            self.steps = 0

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.steps += 1

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            metrics = {f"{prefix}{k}": float(v) for k, v in (logs or {}).items() if np.isscalar(v)}
            metrics[f"{prefix}epoch_seconds"] = time.perf_counter() - self.started
            metrics[f"{prefix}epoch_steps"] = float(self.steps)
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
