"""Stage 5: training of one model (``cnn`` or ``resnet152v2``) on the oversampled manifest.

* Device: every visible GPU through ``MirroredStrategy`` (batch size scaled by replicas),
  mixed precision on GPUs, optional XLA; plain CPU otherwise. Seeds fixed.
* Selection on the validation part only: balanced accuracy is computed after each epoch and
  drives early stopping, the learning-rate plateau schedule and the best-epoch choice. The
  test part is not loaded here at all.
* Resume: Keras ``BackupAndRestore`` checkpoints each epoch; a killed run started again
  continues from its last finished epoch, in the same MLflow run. With
  ``train.checkpoint_uri`` (the cluster), the checkpoint folder is mirrored to S3 after
  every epoch under the pipeline run's id, so a retried task on a new node resumes too.
* Provenance: the run carries code, params, data, image and pipeline-run tags, and the
  lesions it was trained and selected on (``lesions.json``), which promotion reads to
  never score a model on its own training data.
* ResNet152V2: phase 1 trains a new head on the frozen backbone (on CPU, on backbone
  features computed once), phase 2 fine-tunes the top blocks at a lower learning rate.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skinlesion.decision import fit_recall_floors
from skinlesion.inputs import ImageTable, InputSettings, decode_images, labels_of, make_dataset
from skinlesion.labels import CLASSES
from skinlesion.leakage import assert_no_leakage
from skinlesion.metadata import model_inputs
from skinlesion.models import (
    MODEL_NAMES,
    build_backbone,
    build_cnn,
    build_head,
    build_resnet152v2,
    shift_decisions,
    unfreeze_top,
)
from skinlesion.provenance import KFP_RUN_ENV, LESIONS_ARTIFACT, run_provenance
from skinlesion.split import read_manifest
from skinlesion.storage import delete_prefix, mirror_from_s3, mirror_to_s3
from skinlesion.tracking import configure_tracking, file_md5, flatten, log_keras_model

log = logging.getLogger(__name__)
MEL = CLASSES.index("mel")


@dataclass
class TrainResult:
    """What a training run produced; also written as the stage's metrics JSON."""

    model: str
    model_path: str
    run_id: str
    model_uri: str  # the MLflow logged model, what promotion registers
    best_epoch: int
    epochs_run: int
    resumed_from_epoch: int
    val_balanced_accuracy: float
    val_mel_recall: float
    val_accuracy: float
    train_images_per_s: float
    replicas: int
    mixed_precision: bool


@dataclass(frozen=True)
class Device:
    strategy: Any
    replicas: int
    gpus: int
    mixed_precision: bool


def select_device(train_cfg: dict[str, Any]) -> Device:
    """MirroredStrategy over all GPUs, else the default (CPU) strategy."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    strategy = tf.distribute.MirroredStrategy() if gpus else tf.distribute.get_strategy()
    wanted = str(train_cfg.get("mixed_precision", "auto")).lower()
    mixed = bool(gpus) if wanted == "auto" else wanted in ("true", "1", "yes", "mixed_float16")
    return Device(strategy, strategy.num_replicas_in_sync, len(gpus), mixed)


@contextmanager
def precision_policy(mixed: bool):
    """Mixed precision for the duration of a run only (Keras's policy is global)."""
    import keras

    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _validation_callback(val_data: Any, val_labels: np.ndarray) -> Any:
    import keras
    from sklearn.metrics import balanced_accuracy_score, recall_score

    class ValidationMetrics(keras.callbacks.Callback):
        """Adds val_balanced_accuracy and val_mel_recall to the epoch logs (runs first, so
        early stopping, the schedule and the checkpoint see them)."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            predicted = self.model.predict(val_data, verbose=0).argmax(axis=1)
            logs = logs if logs is not None else {}
            logs["val_balanced_accuracy"] = float(balanced_accuracy_score(val_labels, predicted))
            logs["val_mel_recall"] = float(
                recall_score(val_labels, predicted, labels=[MEL], average="macro", zero_division=0)
            )

    return ValidationMetrics()


def _remote_callback(ctx: Context) -> Any:
    import keras

    class MirrorCheckpoints(keras.callbacks.Callback):
        """After the epoch's checkpoints are written locally, copy them to S3."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            ctx.save_remote()

    return MirrorCheckpoints()


def _mlflow_callback(prefix: str) -> Any:
    import keras
    import mlflow

    class MlflowEpochs(keras.callbacks.Callback):
        """Per-epoch metrics to MLflow, with the epoch as step."""

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


def _best_keeper(path: Path, monitor: str) -> Any:
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


def _optimizer(lr: float, schedule: str, epochs: int, steps: int, ema: float = 0.0) -> Any:
    """Adam with the learning-rate schedule; ``ema`` > 0 also keeps an exponential moving
    average of the weights, which validation, checkpoints and the saved model use."""
    import keras

    rate: Any = lr
    if schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, epochs * steps))
    elif schedule not in ("constant", "plateau"):
        raise ValueError(f"unknown lr_schedule {schedule!r}: cosine | plateau | constant")
    if ema:
        return keras.optimizers.Adam(rate, use_ema=True, ema_momentum=ema)
    return keras.optimizers.Adam(rate)


@dataclass
class Phase:
    """One call of ``fit`` with its own checkpoint folder."""

    name: str
    epochs: int
    lr: float
    schedule: str
    patience: int
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
    seed: int
    work_dir: Path
    monitor: str
    xla: bool
    device: Device
    history_csv: Path
    class_weight: dict[int, float] | None
    min_mel_recall: float = 0.0  # validation melanoma recall of the operating point; 0: argmax
    remote: str | None = None  # s3:// mirror of ``work_dir`` (cluster); None: local only

    def save_remote(self) -> None:
        """Mirror the checkpoint folder to S3, when training has a remote copy."""
        if self.remote:
            mirror_to_s3(self.work_dir, self.remote)

    @property
    def steps(self) -> int:
        return -(-len(self.train_idx) // self.batch_size)


def balanced_class_weight(labels: np.ndarray) -> dict[int, float]:
    """n / (k * n_c): the loss sees every class with equal total weight."""
    classes, counts = np.unique(labels, return_counts=True)
    return {
        int(c): float(len(labels) / (len(classes) * n))
        for c, n in zip(classes, counts, strict=True)
    }


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
    if done.is_file():  # finished before a kill in a later phase: do not train it again
        log.info("%s: already finished, loading its best weights", phase.name)
        model.load_weights(best_path)
        return _best_keeper(best_path, ctx.monitor), 0, 0
    meta = backup / "training_metadata.json"
    start_epoch = json.loads(meta.read_text()).get("epoch", -1) + 1 if meta.is_file() else 0
    if start_epoch:
        log.info("%s: resuming from checkpoint after epoch %d", phase.name, start_epoch)
    monitor = ctx.monitor
    with ctx.device.strategy.scope():
        model.compile(
            optimizer=_optimizer(phase.lr, phase.schedule, phase.epochs, ctx.steps, phase.ema),
            loss="categorical_crossentropy",
            metrics=[
                "accuracy",
                keras.metrics.AUC(multi_label=True, num_labels=len(CLASSES), name="macro_auc"),
            ],
            jit_compile=ctx.xla,
        )
    keeper = _best_keeper(best_path, monitor)
    # With weight averaging, the averaged weights are swapped in at each epoch's end, before
    # the validation metrics, the checkpoints and the best-epoch keeper see the model.
    averaging = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if phase.ema else []
    callbacks = [
        *averaging,
        _validation_callback(val_ds, ctx.y_val),
        keras.callbacks.BackupAndRestore(str(backup)),
        keeper,
        keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=phase.patience),
        keras.callbacks.CSVLogger(str(ctx.history_csv), append=ctx.history_csv.exists()),
        _mlflow_callback(f"{phase.name}_" if phase.name != "train" else ""),
        _remote_callback(ctx),  # last: after every file of the epoch is written
    ]
    if phase.schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode="max", factor=0.5, patience=2)
        )
    history = model.fit(
        train_ds,
        validation_data=val_ds,
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


def _config_fingerprint(config: dict[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def _prepare_work_dir(work_dir: Path, config: dict[str, Any]) -> bool:
    """Keep checkpoints only if they come from the same configuration and data; returns
    whether an interrupted run is being continued."""
    stamp = work_dir / "config.sha256"
    fingerprint = _config_fingerprint(config)
    if work_dir.exists() and (not stamp.is_file() or stamp.read_text() != fingerprint):
        log.warning(
            "discarding checkpoints in %s: they were made with other params or data", work_dir
        )
        shutil.rmtree(work_dir)
    resuming = (work_dir / "mlflow_run_id").is_file()
    work_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)
    return resuming


def _start_run(work_dir: Path, model_name: str) -> Any:
    """Start (or, after a kill, re-open) this training's MLflow run."""
    import mlflow

    run_file = work_dir / "mlflow_run_id"
    if run_file.is_file():
        try:
            return mlflow.start_run(run_id=run_file.read_text().strip())
        except mlflow.exceptions.MlflowException:
            log.warning("previous MLflow run not found; starting a new one")
    run = mlflow.start_run(run_name=f"train-{model_name}")
    run_file.write_text(run.info.run_id)
    return run


def _features(model: Any, table: ImageTable, batch_size: int) -> np.ndarray:
    """Pooled backbone features of every distinct image, computed once (phase 1 on CPU),
    through the assembled model's own preprocessing and backbone layers."""
    import keras

    from skinlesion.progress import progress

    extractor = keras.Model(model.get_layer("image").output, model.get_layer("avg_pool").output)
    batches = range(0, len(table.images), batch_size)
    return np.concatenate(
        [
            extractor(table.images[i : i + batch_size].astype("float32"), training=False).numpy()
            for i in progress(batches, total=len(batches), desc="backbone features")
        ]
    )


def _feature_dataset(
    features: np.ndarray,
    metadata: np.ndarray | None,
    rows: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    training: bool,
    seed: int,
) -> Any:
    """Batches of cached features (and metadata, for a head that takes it) per row."""
    import tensorflow as tf

    table = tf.constant(features)
    meta = None if metadata is None else tf.constant(metadata)
    ds = tf.data.Dataset.from_tensor_slices((rows, labels))
    if training:
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)

    def gather(i: Any, y: Any) -> tuple[Any, Any]:
        x = tf.gather(table, i)
        if meta is not None:
            x = {"features": x, "metadata": tf.gather(meta, i)}
        return x, tf.one_hot(y, len(CLASSES))

    return ds.batch(batch_size).map(gather).prefetch(tf.data.AUTOTUNE)


def train_model(
    model_name: str,
    manifest_path: str | Path,
    data_dir: str | Path,
    out_model: str | Path,
    report_dir: str | Path,
    params: dict[str, Any],
) -> TrainResult:
    """Train ``model_name`` on the training rows of the (oversampled) manifest, select on
    its validation rows, save ``out_model`` (.keras) and log everything to MLflow."""
    import keras
    import mlflow

    if model_name not in MODEL_NAMES:
        raise ValueError(f"unknown model {model_name!r}; choose one of {', '.join(MODEL_NAMES)}")
    train_cfg = params["train"]
    cfg = train_cfg[model_name]
    inputs = InputSettings.from_params(params)
    seed = int(train_cfg["seed"])
    monitor = train_cfg["monitor"]
    manifest = read_manifest(manifest_path)
    assert_no_leakage(manifest)  # never train on a manifest that leaks
    train_rows = manifest[manifest["split"] == "train"]
    val_rows = manifest[manifest["split"] == "val"]
    if train_rows.empty or val_rows.empty:
        raise ValueError("the manifest needs train and val rows")

    keras.utils.set_random_seed(seed)
    device = select_device(train_cfg)
    batch_size = int(cfg["batch_size"]) * device.replicas
    work_dir = Path(train_cfg["checkpoint_dir"]) / model_name
    manifest_md5 = file_md5(manifest_path)
    remote = remote_checkpoints(train_cfg.get("checkpoint_uri"), model_name)
    if remote and not work_dir.exists():  # a new pod: take the last epoch from S3
        restored = mirror_from_s3(remote, work_dir)
        if restored:
            log.info("restored %d checkpoint files from %s", restored, remote)
    resuming = _prepare_work_dir(
        work_dir,
        {
            "model": model_name,
            "cfg": cfg,
            "input": asdict(inputs),
            "seed": seed,
            "monitor": monitor,
            "class_weight": train_cfg.get("class_weight"),
            "manifest": manifest_md5,
        },
    )
    report = Path(report_dir)
    report.mkdir(parents=True, exist_ok=True)
    history_csv = report / "history.csv"
    if not resuming and history_csv.exists():
        history_csv.unlink()  # a fresh run starts a fresh history; a resumed one appends

    table = decode_images(data_dir, pd.concat([train_rows, val_rows]), inputs)
    train_idx, val_idx = table.rows(train_rows["image_id"]), table.rows(val_rows["image_id"])
    y_train, y_val = labels_of(train_rows), labels_of(val_rows)
    weighting = str(train_cfg.get("class_weight", "none")).lower()
    ctx = Context(
        table=table,
        train_idx=train_idx,
        y_train=y_train,
        val_idx=val_idx,
        y_val=y_val,
        batch_size=batch_size,
        inputs=inputs,
        seed=seed,
        work_dir=work_dir,
        monitor=monitor,
        xla=bool(train_cfg.get("xla")),
        device=device,
        history_csv=history_csv,
        class_weight=balanced_class_weight(y_train) if weighting == "balanced" else None,
        min_mel_recall=float(train_cfg.get("decision_min_mel_recall", 0.0)),
        remote=remote,
    )

    configure_tracking(train_cfg["mlflow_experiment"])
    with precision_policy(device.mixed_precision), _start_run(work_dir, model_name) as run:
        mlflow.set_tags(
            {
                **run_provenance(params, data_dir),
                "model": model_name,
                "data.manifest_md5": manifest_md5,
                "device": f"{device.gpus} GPU" if device.gpus else "CPU",
            }
        )
        mlflow.log_dict(training_lesions(train_rows, val_rows, manifest_md5), LESIONS_ARTIFACT)
        mlflow.log_params(
            {
                k: str(v)[:500]
                for k, v in {
                    **flatten(f"train.{model_name}", cfg),
                    **flatten("input", asdict(inputs)),
                    "train.seed": seed,
                    "train.class_weight": weighting,
                    "replicas": device.replicas,
                    "global_batch_size": batch_size,
                    "mixed_precision": device.mixed_precision,
                    "n_train": len(train_idx),
                    "n_val": len(val_idx),
                }.items()
            }
        )
        started = time.perf_counter()
        if model_name == "cnn":
            with device.strategy.scope():
                model = build_cnn(cfg, inputs.image_size, metadata_dim=ctx.inputs.metadata_dim)
            phase = Phase(
                "train",
                cfg["epochs"],
                cfg["lr"],
                cfg["lr_schedule"],
                cfg["early_stopping_patience"],
                float(cfg.get("ema_momentum", 0.0)),
            )
            keeper, resumed, epochs_run = _fit_images(model, phase, ctx)
        else:
            model, keeper, resumed, epochs_run = _train_resnet(cfg, ctx)
        seconds = time.perf_counter() - started
        tuned = _set_operating_point(model, ctx) if ctx.min_mel_recall > 0 else None
        throughput = epochs_run * len(train_idx) / seconds if seconds else 0.0

        out = Path(out_model)
        out.parent.mkdir(parents=True, exist_ok=True)
        model.save(out)
        first = val_idx[:1]
        example = model_inputs(model, table.images[first].astype("float32"), table.metadata[first])
        logged = log_keras_model(model, example)
        if history_csv.is_file():
            mlflow.log_artifact(str(history_csv))
            curves = plot_history(history_csv, report / "curves.png")
            mlflow.log_artifact(str(curves))
        best = {**keeper.best_logs, **(tuned or {})}  # after tuning, if tuned
        result = TrainResult(
            model=model_name,
            model_path=str(out),
            run_id=run.info.run_id,
            model_uri=logged.model_uri,
            best_epoch=keeper.best_epoch,
            epochs_run=epochs_run,
            resumed_from_epoch=resumed,
            val_balanced_accuracy=float(best.get("val_balanced_accuracy", float("nan"))),
            val_mel_recall=float(best.get("val_mel_recall", float("nan"))),
            val_accuracy=float(best.get("val_accuracy", float("nan"))),
            train_images_per_s=round(throughput, 1),
            replicas=device.replicas,
            mixed_precision=device.mixed_precision,
        )
        mlflow.log_metrics(
            {
                "best_val_balanced_accuracy": result.val_balanced_accuracy,
                "best_val_mel_recall": result.val_mel_recall,
                "train_images_per_s": result.train_images_per_s,
            }
        )
    (report / "metrics.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    shutil.rmtree(work_dir)  # finished: the next run starts afresh
    if remote:
        delete_prefix(remote)
    return result


def remote_checkpoints(base_uri: str | None, model_name: str) -> str | None:
    """The S3 prefix of this training's checkpoints: one per pipeline run and model, so
    that a retried task of the same run finds them and another run does not."""
    if not base_uri:
        return None
    if not str(base_uri).startswith("s3://"):
        raise ValueError(f"train.checkpoint_uri must be an s3:// URI, not {base_uri!r}")
    run_key = os.environ.get(KFP_RUN_ENV) or "local"
    return f"{str(base_uri).rstrip('/')}/{run_key}/{model_name}"


def training_lesions(
    train_rows: pd.DataFrame, val_rows: pd.DataFrame, manifest_md5: str
) -> dict[str, Any]:
    """The lesions a model learnt from (train) and was selected on (val): a gate that
    scores the model must leave them out."""
    return {
        "manifest_md5": manifest_md5,
        "train": sorted(train_rows["lesion_id"].astype(str).unique()),
        "val": sorted(val_rows["lesion_id"].astype(str).unique()),
    }


def _set_operating_point(model: Any, ctx: Context) -> dict[str, float]:
    """Raise melanoma's decision offset until the validation melanoma recall reaches
    ``min_mel_recall`` (never looking at test), folded into the softmax bias of ``model``.
    Returns the validation metrics at that operating point."""
    import mlflow

    val_ds = make_dataset(
        ctx.table, ctx.val_idx, ctx.y_val, ctx.batch_size, False, ctx.inputs, ctx.seed
    )
    probs = model.predict(val_ds, verbose=0)
    offsets, before, after = fit_recall_floors(probs, ctx.y_val, {MEL: ctx.min_mel_recall})
    log.info(
        "melanoma decision offset %.2f for validation recall >= %.2f: "
        "validation balanced accuracy %.4f -> %.4f",
        offsets[MEL],
        ctx.min_mel_recall,
        before,
        after,
    )
    mlflow.log_metrics(
        {"val_balanced_accuracy_argmax": before, "val_balanced_accuracy_operating_point": after}
    )
    mlflow.log_dict(
        {c: float(o) for c, o in zip(CLASSES, offsets, strict=True)}, "decision_offsets.json"
    )
    shift_decisions(model, offsets.tolist())
    decided = (np.log(np.clip(probs, 1e-7, 1.0)) + offsets).argmax(axis=1)
    mel = ctx.y_val == MEL
    return {
        "val_balanced_accuracy": after,
        "val_mel_recall": float((decided[mel] == MEL).mean()) if mel.any() else float("nan"),
        "val_accuracy": float((decided == ctx.y_val).mean()),
    }


def _fit_images(model: Any, phase: Phase, ctx: Context) -> tuple[Any, int, int]:
    """Fit one phase of an image-input model on augmented training batches."""
    train_ds = make_dataset(
        ctx.table, ctx.train_idx, ctx.y_train, ctx.batch_size, True, ctx.inputs, ctx.seed
    )
    val_ds = make_dataset(
        ctx.table, ctx.val_idx, ctx.y_val, ctx.batch_size, False, ctx.inputs, ctx.seed
    )
    return fit_phase(model, phase, train_ds, val_ds, ctx)


def _train_resnet(cfg: dict[str, Any], ctx: Context) -> tuple[Any, Any, int, int]:
    """Phase 1 (head on frozen backbone, on cached features on CPU), then phase 2."""
    cached = str(cfg.get("cache_features", "auto")).lower()
    use_cache = ctx.device.gpus == 0 if cached == "auto" else cached in ("true", "1", "yes")
    size = ctx.inputs.image_size
    with ctx.device.strategy.scope():
        backbone = build_backbone(cfg["weights"], size)
        backbone.trainable = False
        head = build_head(cfg, int(backbone.output_shape[-1]), metadata_dim=ctx.inputs.metadata_dim)
        model = build_resnet152v2(backbone, head, size, metadata_dim=ctx.inputs.metadata_dim)
    head_phase = Phase(
        "head",
        cfg["head_epochs"],
        cfg["head_lr"],
        cfg["lr_schedule"],
        cfg["early_stopping_patience"],
    )
    if use_cache:
        log.info("phase 1 on cached backbone features (augmentation does not apply)")
        features = _features(model, ctx.table, ctx.batch_size)
        meta = ctx.table.metadata if ctx.inputs.metadata_dim else None
        train_ds = _feature_dataset(
            features, meta, ctx.train_idx, ctx.y_train, ctx.batch_size, True, ctx.seed
        )
        val_ds = _feature_dataset(
            features, meta, ctx.val_idx, ctx.y_val, ctx.batch_size, False, ctx.seed
        )
        keeper, resumed, total = fit_phase(head, head_phase, train_ds, val_ds, ctx)
    else:
        keeper, resumed, total = _fit_images(model, head_phase, ctx)
    if int(cfg.get("fine_tune_epochs", 0)) > 0:
        phase1 = ctx.work_dir / "phase1.weights.h5"
        if not phase1.is_file():
            model.save_weights(phase1)
        with ctx.device.strategy.scope():
            n = unfreeze_top(backbone, cfg["fine_tune_from"])
        log.info("phase 2: fine-tuning %d backbone layers", n)
        tune = Phase(
            "fine_tune",
            cfg["fine_tune_epochs"],
            cfg["fine_tune_lr"],
            "constant",
            cfg["early_stopping_patience"],
        )
        tune_keeper, start, run = _fit_images(model, tune, ctx)
        total += run
        resumed = resumed or start
        if tune_keeper.best > keeper.best:
            keeper = tune_keeper
        else:  # fine-tuning did not beat the head alone on validation: keep phase 1
            model.load_weights(phase1)
    return model, keeper, resumed, total


def plot_history(history_csv: Path, out: Path) -> Path:
    """Training curves (loss, balanced accuracy, melanoma recall) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = pd.read_csv(history_csv)
    x = np.arange(len(hist))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (title, cols) in zip(
        axes,
        [
            ("loss", ["loss", "val_loss"]),
            ("balanced accuracy", ["val_balanced_accuracy"]),
            ("melanoma recall", ["val_mel_recall"]),
        ],
        strict=True,
    ):
        for col in cols:
            if col in hist:
                ax.plot(x, hist[col], label=col)
        ax.set_title(title)
        ax.set_xlabel("epoch (all phases)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
