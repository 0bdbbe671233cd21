"""One phase of training (a call of ``fit``) with checkpoint/resume and selection on the
validation part only, and what every recipe's run shares (:class:`Context`).

The test part is never loaded here: balanced accuracy on validation drives early
stopping, the plateau schedule, the best-epoch choice and the operating point.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skinlesion.config.schema import InputSettings, RecipeSettings, TrainSettings
from skinlesion.data.storage import mirror_to_s3
from skinlesion.labels import CLASSES
from skinlesion.training.callbacks import (
    after_epoch,
    best_keeper,
    epoch_hook,
    mlflow_epochs,
    validation_metrics,
)
from skinlesion.training.device import Device
from skinlesion.training.inputs import ImageTable, make_dataset

log = logging.getLogger(__name__)
MEL = CLASSES.index("mel")


@dataclass
class Phase:
    """One call of ``fit`` with its own checkpoint folder; the schedule's settings come
    from the recipe's section."""

    name: str
    epochs: int
    lr: float
    schedule: str
    recipe: RecipeSettings
    ema: float = 0.0  # weight averaging momentum; 0 = off


@dataclass
class Context:
    """Everything the phases of one training run share."""

    table: ImageTable
    train_idx: np.ndarray
    y_train: np.ndarray
    val_idx: np.ndarray
    y_val: np.ndarray
    batch_size: int
    inputs: InputSettings
    train: TrainSettings
    work_dir: Path
    device: Device
    history_csv: Path
    class_weight: dict[int, float] | None
    remote: str | None = None  # s3:// mirror of ``work_dir`` (cluster); None: local only
    # called with (epoch, logs) after every epoch, once the validation metrics are in the
    # logs: a search reports to its pruner here, which may stop the run by raising
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None

    def save_remote(self) -> None:
        """Mirror the checkpoint folder to S3, when training has a remote copy."""
        if self.remote:
            mirror_to_s3(self.work_dir, self.remote)

    @property
    def steps(self) -> int:
        """Optimizer steps per epoch: several replicas drop the last partial batch."""
        if self.device.replicas > 1:
            return len(self.train_idx) // self.batch_size
        return -(-len(self.train_idx) // self.batch_size)

    def image_batches(self, training: bool) -> Any:
        """Augmented, shuffled training batches, or plain validation batches."""
        rows, labels = (self.train_idx, self.y_train) if training else (self.val_idx, self.y_val)
        return make_dataset(
            self.table, rows, labels, self.batch_size, training, self.inputs, self.train.seed
        )


@dataclass
class Fitted:
    """A recipe's result: the model on its best weights and how training went."""

    model: Any
    keeper: Any  # the best-epoch callback: best, best_epoch, best_logs
    resumed_from_epoch: int
    epochs_run: int


def balanced_class_weight(labels: np.ndarray) -> dict[int, float]:
    """n / (k * n_c): the loss sees every class with equal total weight."""
    classes, counts = np.unique(labels, return_counts=True)
    return {
        int(c): float(len(labels) / (len(classes) * n))
        for c, n in zip(classes, counts, strict=True)
    }


def optimizer(lr: float, schedule: str, epochs: int, steps: int, ema: float = 0.0) -> Any:
    """Adam with the learning-rate schedule; ``ema`` > 0 also keeps an exponential moving
    average of the weights, which validation, checkpoints and the saved model use."""
    import keras

    rate: Any = lr
    if schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, epochs * steps))
    if ema:
        return keras.optimizers.Adam(rate, use_ema=True, ema_momentum=ema)
    return keras.optimizers.Adam(rate)


def fit_phase(
    model: Any, phase: Phase, train_ds: Any, val_ds: Any, ctx: Context
) -> tuple[Any, int, int]:
    """Train one phase with checkpoint/resume; the model ends on its best epoch's weights.

    Returns (best callback, first epoch of this invocation, epochs run now)."""
    import keras

    backup = ctx.work_dir / phase.name / "backup"
    best_path = ctx.work_dir / phase.name / "best.weights.h5"
    done = ctx.work_dir / phase.name / "done"
    best_path.parent.mkdir(parents=True, exist_ok=True)
    monitor = ctx.train.monitor
    if done.is_file():  # finished before a kill in a later phase: do not train it again
        log.info("%s: already finished, loading its best weights", phase.name)
        model.load_weights(best_path)
        return best_keeper(best_path, monitor), 0, 0
    meta = backup / "training_metadata.json"
    start_epoch = json.loads(meta.read_text()).get("epoch", -1) + 1 if meta.is_file() else 0
    if start_epoch:
        log.info("%s: resuming from checkpoint after epoch %d", phase.name, start_epoch)
    with ctx.device.strategy.scope():
        model.compile(
            optimizer=optimizer(phase.lr, phase.schedule, phase.epochs, ctx.steps, phase.ema),
            loss="categorical_crossentropy",
            metrics=[
                "accuracy",
                keras.metrics.AUC(multi_label=True, num_labels=len(CLASSES), name="macro_auc"),
            ],
            jit_compile=ctx.train.xla,
        )
    keeper = best_keeper(best_path, monitor)
    # With weight averaging, the averaged weights are swapped in at each epoch's end, before
    # the validation metrics, the checkpoints and the best-epoch keeper see the model.
    averaging = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if phase.ema else []
    patience = phase.recipe.early_stopping_patience
    callbacks = [
        *averaging,
        validation_metrics(val_ds, ctx.y_val),
        keras.callbacks.BackupAndRestore(str(backup)),
        keeper,
        keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=patience),
        keras.callbacks.CSVLogger(str(ctx.history_csv), append=ctx.history_csv.exists()),
        mlflow_epochs(f"{phase.name}_" if phase.name != "train" else ""),
        after_epoch(ctx.save_remote),  # after every file of the epoch is written
        *([epoch_hook(ctx.on_epoch)] if ctx.on_epoch else []),  # may stop the run
    ]
    if phase.schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor,
                mode="max",
                factor=phase.recipe.plateau_factor,
                patience=phase.recipe.plateau_patience,
            )
        )
    if ctx.device.replicas > 1:  # every replica gets a whole per-replica batch
        train_ds = train_ds.rebatch(ctx.batch_size, drop_remainder=True)
    history = model.fit(
        train_ds,
        epochs=phase.epochs,
        callbacks=callbacks,
        class_weight=ctx.class_weight,
        verbose=2,
    )
    if best_path.is_file():
        model.load_weights(best_path)
    done.touch()
    ctx.save_remote()
    return keeper, start_epoch, len(history.epoch)


def fit_images(model: Any, phase: Phase, ctx: Context) -> tuple[Any, int, int]:
    """Fit one phase of an image-input model on augmented training batches."""
    return fit_phase(model, phase, ctx.image_batches(True), ctx.image_batches(False), ctx)
