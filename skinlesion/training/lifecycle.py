"""Stage 5: the lifecycle of one training run, whatever the model.

* The model is a recipe (``skinlesion.training.recipes``) chosen by the ``train.<name>`` section:
  its own name, or its ``recipe`` key for a variant. ``train.models`` lists what runs.
* Selection on the validation part only (``skinlesion.training.fitting``); the test part
  is not loaded here at all.
* Resume: each phase checkpoints every epoch; a killed run started again continues from
  its last finished epoch, in the same MLflow run. With ``train.checkpoint_uri`` (the
  cluster) the checkpoints are mirrored to S3 under the pipeline run's id, so a retried
  task on a new node resumes too (``skinlesion.training.checkpoints``).
* Provenance: the run carries code, params, data, image and pipeline-run tags, and the
  lesions it was trained and selected on (``lesions.json``), which promotion reads to
  never score a model on its own training data.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from skinlesion.config.parse import as_params
from skinlesion.config.schema import Params
from skinlesion.data.leakage import assert_no_leakage
from skinlesion.data.split import read_manifest
from skinlesion.data.storage import delete_prefix, mirror_from_s3
from skinlesion.data.versions import file_md5, list_folder, log_data_listing
from skinlesion.model.preprocessing import with_preprocessing
from skinlesion.model.servable import log_serving_model
from skinlesion.provenance import LESIONS_ARTIFACT, run_provenance
from skinlesion.tracking import configure_tracking, flatten
from skinlesion.training.checkpoints import prepare_work_dir, remote_checkpoints
from skinlesion.training.device import precision_policy, select_device
from skinlesion.training.fitting import Context, balanced_class_weight
from skinlesion.training.inputs import decode_images, labels_of
from skinlesion.training.operating_point import set_operating_point
from skinlesion.training.plots import plot_history
from skinlesion.training.recipes import recipe

log = logging.getLogger(__name__)


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


def train_model(
    model_name: str,
    manifest_path: str | Path,
    data_dir: str | Path,
    out_model: str | Path,
    report_dir: str | Path,
    params: Params | dict[str, Any],
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    log_model: bool = True,
) -> TrainResult:
    """Train the model of section ``train.<model_name>`` on the training rows of the
    (oversampled) manifest, select on its validation rows, save ``out_model`` (.keras) and
    log everything to MLflow.

    A search (``skinlesion.tuning.study``) runs each trial through here, so that a trial is the
    real training: ``on_epoch`` gets each epoch's validation logs (and may stop the run by
    raising), the MLflow run is named ``run_name`` with extra ``tags`` (nested under the
    active run, the study's), and ``log_model`` false keeps trials' models out of MLflow."""
    import keras
    import mlflow

    params = as_params(params)
    train_cfg = params.train
    settings = train_cfg.model(model_name)
    fit = recipe(train_cfg.recipe_of(model_name))
    inputs = params.input
    manifest = read_manifest(manifest_path)
    assert_no_leakage(manifest)  # never train on a manifest that leaks
    train_rows = manifest[manifest["split"] == "train"]
    val_rows = manifest[manifest["split"] == "val"]
    if train_rows.empty or val_rows.empty:
        raise ValueError("the manifest needs train and val rows")

    keras.utils.set_random_seed(train_cfg.seed)
    device = select_device(train_cfg.mixed_precision)
    batch_size = settings.batch_size * device.replicas
    work_dir = Path(train_cfg.checkpoint_dir) / model_name
    manifest_md5 = file_md5(manifest_path)
    remote = remote_checkpoints(train_cfg.checkpoint_uri, model_name)
    if remote and not work_dir.exists():  # a new pod: take the last epoch from S3
        restored = mirror_from_s3(remote, work_dir)
        if restored:
            log.info("restored %d checkpoint files from %s", restored, remote)
    resuming = prepare_work_dir(
        work_dir,
        {
            "model": model_name,
            "cfg": settings.model_dump(mode="json"),
            "input": inputs.model_dump(mode="json"),
            "seed": train_cfg.seed,
            "monitor": train_cfg.monitor,
            "class_weight": train_cfg.class_weight,
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
    y_train = labels_of(train_rows)
    ctx = Context(
        table=table,
        train_idx=train_idx,
        y_train=y_train,
        val_idx=val_idx,
        y_val=labels_of(val_rows),
        batch_size=batch_size,
        inputs=inputs,
        train=train_cfg,
        work_dir=work_dir,
        device=device,
        history_csv=history_csv,
        class_weight=balanced_class_weight(y_train)
        if train_cfg.class_weight == "balanced"
        else None,
        remote=remote,
        on_epoch=on_epoch,
    )

    listing = list_folder(data_dir, params.data.workers)
    configure_tracking(params.tracking.experiment)
    with (
        precision_policy(device.mixed_precision),
        _start_run(work_dir, run_name or f"train-{model_name}") as run,
    ):
        log_data_listing(listing, data_dir)
        mlflow.set_tags(
            {
                **run_provenance(params, listing.version),
                "model": model_name,
                "recipe": train_cfg.recipe_of(model_name),
                "data.manifest_md5": manifest_md5,
                "device": f"{device.gpus} GPU" if device.gpus else "CPU",
                **(tags or {}),
            }
        )
        mlflow.log_dict(training_lesions(train_rows, val_rows, manifest_md5), LESIONS_ARTIFACT)
        mlflow.log_params(
            {
                k: str(v)[:500]
                for k, v in {
                    **flatten(f"train.{model_name}", settings.model_dump(mode="json")),
                    **flatten("input", inputs.model_dump(mode="json")),
                    "train.seed": train_cfg.seed,
                    "train.class_weight": train_cfg.class_weight,
                    "replicas": device.replicas,
                    "global_batch_size": batch_size,
                    "mixed_precision": device.mixed_precision,
                    "n_train": len(train_idx),
                    "n_val": len(val_idx),
                }.items()
            }
        )
        started = time.perf_counter()
        fitted = fit(settings, ctx)
        seconds = time.perf_counter() - started
        core = fitted.model
        tuned = set_operating_point(core, ctx) if train_cfg.decision_min_mel_recall > 0 else {}
        throughput = fitted.epochs_run * len(train_idx) / seconds if seconds else 0.0

        out = Path(out_model)
        out.parent.mkdir(parents=True, exist_ok=True)
        # saved and served with its own preprocessing: raw images in, nothing from params
        with_preprocessing(core, inputs.image_size, inputs.center_crop).save(out)
        example = table.images[val_idx[0]]
        model_uri = log_serving_model(out, example).model_uri if log_model else ""
        if history_csv.is_file():
            mlflow.log_artifact(str(history_csv))
            curves = plot_history(history_csv, report / "curves.png")
            mlflow.log_artifact(str(curves))
        best = {**fitted.keeper.best_logs, **tuned}  # at the operating point, when set
        result = TrainResult(
            model=model_name,
            model_path=str(out),
            run_id=run.info.run_id,
            model_uri=model_uri,
            best_epoch=fitted.keeper.best_epoch,
            epochs_run=fitted.epochs_run,
            resumed_from_epoch=fitted.resumed_from_epoch,
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


def _start_run(work_dir: Path, run_name: str) -> Any:
    """Start (or, after a kill, re-open) this training's MLflow run; nested under the
    active run when there is one (a study's)."""
    import mlflow

    run_file = work_dir / "mlflow_run_id"
    nested = mlflow.active_run() is not None
    if run_file.is_file():
        try:
            return mlflow.start_run(run_id=run_file.read_text().strip(), nested=nested)
        except mlflow.exceptions.MlflowException:
            log.warning("previous MLflow run not found; starting a new one")
    run = mlflow.start_run(run_name=run_name, nested=nested)
    run_file.write_text(run.info.run_id)
    return run


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
