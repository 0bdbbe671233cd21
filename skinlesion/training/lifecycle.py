"""Step 7 of the flow: the lifecycle of one training run, whatever the model: resume, log
the inputs, fit, save and log (a function each; :func:`train_model` runs them).

* The model is a recipe (``skinlesion.training.recipes``) chosen by the ``train.<name>`` section:
  its own name, or its ``recipe`` key for a variant. ``train.models`` lists what runs.
* Selection on the validation part only (``skinlesion.training.fitting``); the test part
  is not loaded here at all.
* Resume: each phase checkpoints every epoch; a killed run started again continues from
  its last finished epoch, in the same MLflow run. With ``train.checkpoint_uri`` (the
  cluster) the checkpoints are mirrored to S3 under the pipeline run's id, so a retried
  task on a new node resumes too (``skinlesion.training.checkpoints``).
* Reliability and monitoring: the conformal calibration, feature distance and input
  contract saved in the model (``skinlesion.training.reliability``), and the validation
  images' fields, decisions and features logged as ``monitoring/reference.parquet``, what
  drift in served traffic is judged against.
* Provenance: the run carries code, params, data, image and pipeline-run tags, and the
  lesions it was trained and selected on (``lesions.json``), which promotion reads to
  never score a model on its own training data.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from skinlesion.config.schema import InputSettings, RecipeSettings
from skinlesion.data.leakage import assert_no_leakage
from skinlesion.data.split import read_manifest
from skinlesion.data.storage import delete_prefix, mirror_from_s3
from skinlesion.data.versions import file_md5, list_folder, log_data_listing
from skinlesion.labels import labels_of
from skinlesion.model.confidence import ECE_BINS
from skinlesion.model.preprocessing import with_preprocessing
from skinlesion.model.reference import log_monitoring_reference, monitoring_reference
from skinlesion.model.reliability import Reliability, attach
from skinlesion.model.servable import log_serving_model
from skinlesion.provenance import LESIONS_ARTIFACT, RunOrigin, run_provenance
from skinlesion.tracking import configure_tracking, flatten
from skinlesion.training.checkpoints import prepare_work_dir, remote_checkpoints
from skinlesion.training.device import (
    DeviceError,
    float32_copy,
    precision_policy,
    select_device,
)
from skinlesion.training.fitting import Context, balanced_class_weight
from skinlesion.training.inputs import decode_images
from skinlesion.training.operating_point import set_operating_point
from skinlesion.training.plots import plot_history
from skinlesion.training.recipes import recipe
from skinlesion.training.reliability import fit_reliability
from skinlesion.training.scaling import calibrate

if TYPE_CHECKING:
    from skinlesion.config.params import Params

log = logging.getLogger(__name__)
# What the calibration and the operating point report of how they changed the logits;
# the model's reliability records them.
ADJUSTMENTS = ("calibration_scale", "calibration_shift", "decision_offsets")


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
    # calibration (fitted on validation): ECE before and after, the temperature
    val_ece_uncalibrated: float = math.nan
    val_ece: float = math.nan
    temperature: float = math.nan
    # what a clinic feels, on validation, at the configured alpha (promotion may choose
    # by these): sets, referrals, melanoma sensitivity at fixed specificities
    val_set_size_mean: float = math.nan
    val_singleton_share: float = math.nan
    val_refer_rate: float = math.nan
    val_mel_sensitivity_at: dict[str, float] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)  # an ensemble's


def train_model(
    model_name: str,
    manifest_path: str | Path,
    data_dir: str | Path,
    out_model: str | Path,
    report_dir: str | Path,
    params: Params,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    log_model: bool = True,
    origin: RunOrigin | None = None,
) -> TrainResult:
    """Train the model of section ``train.<model_name>`` on the training rows of the
    (oversampled) manifest, select on its validation rows, save ``out_model`` (.keras) and
    log everything to MLflow.

    A search (``skinlesion.tuning.study``) runs each trial through here, so that a trial is
    the real training: ``on_epoch`` gets each epoch's validation logs (and may stop the run
    by raising), the MLflow run is named ``run_name`` with extra ``tags`` (nested under the
    active run, the study's), and ``log_model`` false keeps trials' models out of MLflow.
    ``origin`` is the pipeline run and image of a cluster task: it tags the run and names
    the S3 checkpoints a retried task resumes from."""
    import mlflow

    origin = origin or RunOrigin()
    rows = training_rows(manifest_path)
    ctx = _resume(model_name, rows, data_dir, Path(report_dir), params, on_epoch, origin)
    listing = list_folder(data_dir, params.data.workers)
    configure_tracking(params.tracking.experiment)
    with _start_run(ctx.work_dir, run_name or f"train-{model_name}") as run:
        log_data_listing(listing, data_dir)
        provenance = run_provenance(params, listing.version, origin)
        _log_inputs(model_name, ctx, rows, params, {**provenance, **(tags or {})})
        fitted, tuned, throughput = _fit(model_name, ctx, params, rows.val)
        reliability, figures, (val_features, val_probs) = fit_reliability(
            fitted.model,
            ctx,
            params.train.reliability,
            params.validate_,
            {k: v for k, v in tuned.items() if k in ADJUSTMENTS},
        )
        mlflow.log_metrics(figures)
        log_monitoring_reference(monitoring_reference(rows.val, val_features, val_probs))
        result = _save_and_log(
            model_name,
            fitted,
            tuned,
            throughput,
            ctx,
            reliability,
            figures,
            Path(out_model),
            Path(report_dir),
        )
        result.run_id = run.info.run_id
        result.model_uri = (
            log_serving_model(out_model, example_image(data_dir, rows.val)).model_uri
            if log_model
            else ""
        )
        mlflow.log_metrics(
            {
                "best_val_balanced_accuracy": result.val_balanced_accuracy,
                "best_val_mel_recall": result.val_mel_recall,
                "train_images_per_s": result.train_images_per_s,
            }
        )
    (Path(report_dir) / "metrics.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    shutil.rmtree(ctx.work_dir)  # finished: the next run starts afresh
    if ctx.remote:
        delete_prefix(ctx.remote)
    return result


@dataclass(frozen=True)
class _Rows:
    """The manifest a training reads, checked for leakage, and its train and val rows."""

    manifest_md5: str
    train: pd.DataFrame
    val: pd.DataFrame


def training_rows(manifest_path: str | Path) -> _Rows:
    manifest = read_manifest(manifest_path)
    assert_no_leakage(manifest)  # never train on a manifest that leaks
    train_rows = manifest[manifest["split"] == "train"]
    val_rows = manifest[manifest["split"] == "val"]
    if train_rows.empty or val_rows.empty:
        raise ValueError("the manifest needs train and val rows")
    return _Rows(file_md5(manifest_path), train_rows, val_rows)


def model_inputs(inputs: InputSettings, settings: RecipeSettings) -> InputSettings:
    """The input settings of one model: ``input``, with the model's own ``image_size`` when
    its section sets one (a transfer network may want larger images than the CNN)."""
    if settings.image_size is None:
        return inputs
    return inputs.model_copy(update={"image_size": settings.image_size})


def _resume(
    model_name: str,
    rows: _Rows,
    data_dir: str | Path,
    report: Path,
    params: Params,
    on_epoch: Callable[[int, dict[str, Any]], None] | None,
    origin: RunOrigin,
) -> Context:
    """Resume: the device, the checkpoint folder (kept, or restored from S3, only when it
    holds this very configuration and data) and the decoded images of the run."""
    import keras

    train_cfg = params.train
    settings = train_cfg.model(model_name)
    inputs = model_inputs(params.input, settings)
    keras.utils.set_random_seed(train_cfg.seed)
    device = select_device(train_cfg.mixed_precision)
    global_batch = settings.batch_size * device.replicas
    if device.replicas > 1 and len(rows.train) < global_batch:  # before any checkpoint work
        raise DeviceError(
            f"{len(rows.train)} training images cannot fill one global batch of "
            f"{settings.batch_size} x {device.replicas} replicas: lower "
            f"train.{model_name}.batch_size"
        )
    work_dir = Path(train_cfg.checkpoint_dir) / model_name
    remote = remote_checkpoints(train_cfg.checkpoint_uri, model_name, origin.kfp_run_id)
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
            "manifest": rows.manifest_md5,
        },
    )
    report.mkdir(parents=True, exist_ok=True)
    history_csv = report / "history.csv"
    if not resuming and history_csv.exists():
        history_csv.unlink()  # a fresh run starts a fresh history; a resumed one appends
    table = decode_images(data_dir, pd.concat([rows.train, rows.val]), inputs)
    y_train = labels_of(rows.train)
    return Context(
        table=table,
        train_idx=table.rows(rows.train["image_id"]),
        y_train=y_train,
        val_idx=table.rows(rows.val["image_id"]),
        y_val=labels_of(rows.val),
        batch_size=global_batch,
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


def _log_inputs(
    model_name: str, ctx: Context, rows: _Rows, params: Params, tags: Mapping[str, str]
) -> None:
    """Log the inputs: what the run learns from, on the MLflow run: provenance tags, the lesions
    of train and val (promotion leaves them out of the gate) and the parameters."""
    import mlflow

    train_cfg = params.train
    mlflow.set_tags(
        {
            "model": model_name,
            "recipe": train_cfg.recipe_of(model_name),
            "data.manifest_md5": rows.manifest_md5,
            "device": f"{ctx.device.gpus} GPU" if ctx.device.gpus else "CPU",
            **tags,
        }
    )
    lesions = training_lesions(rows.train, rows.val, rows.manifest_md5)
    mlflow.log_dict(lesions, LESIONS_ARTIFACT)
    settings = train_cfg.model(model_name).model_dump(mode="json")
    mlflow.log_params(
        {
            k: str(v)[:500]
            for k, v in {
                **flatten(f"train.{model_name}", settings),
                **flatten("input", ctx.inputs.model_dump(mode="json")),
                "train.seed": train_cfg.seed,
                "train.class_weight": train_cfg.class_weight,
                "replicas": ctx.device.replicas,
                "global_batch_size": ctx.batch_size,
                "mixed_precision": ctx.device.mixed_precision,
                "n_train": len(ctx.train_idx),
                "n_val": len(ctx.val_idx),
            }.items()
        }
    )


def _fit(
    model_name: str, ctx: Context, params: Params, val_rows: pd.DataFrame
) -> tuple[Any, dict[str, Any], float]:
    """Fit: the recipe's phases, then the calibration and the melanoma operating point on
    validation. Returns the fitted model, the validation figures at the operating point
    (with the calibration's) and images/s."""
    import mlflow

    train_cfg = params.train
    fit = recipe(train_cfg.recipe_of(model_name))
    started = time.perf_counter()
    with precision_policy(ctx.device.mixed_precision) as compute_dtype:
        fitted = fit(train_cfg.model(model_name), ctx)
    seconds = time.perf_counter() - started
    # what the phases computed in, and the dtype of the probabilities the loss saw
    output_dtype = str(fitted.model.output.dtype)
    mlflow.log_params({"compute_dtype": compute_dtype, "output_dtype": output_dtype})
    if ctx.device.mixed_precision:
        fitted.model = float32_copy(fitted.model)
    probs = fitted.model.predict(ctx.image_batches(False), verbose=0)
    probs, tuned = calibrate(
        fitted.model,
        probs,
        ctx.y_val,
        val_rows["lesion_id"].astype(str).to_numpy(),
        train_cfg.calibration,
        ECE_BINS,
        train_cfg.seed,
    )
    if train_cfg.decision_min_mel_recall > 0:
        tuned = {**tuned, **set_operating_point(fitted.model, ctx, probs)}
    throughput = fitted.epochs_run * len(ctx.train_idx) / seconds if seconds else 0.0
    return fitted, tuned, throughput


def _save_and_log(
    model_name: str,
    fitted: Any,
    tuned: dict[str, Any],
    throughput: float,
    ctx: Context,
    reliability: Reliability,
    figures: dict[str, float],
    out: Path,
    report: Path,
) -> TrainResult:
    """Save and log: the model saved with its own preprocessing and its reliability (raw
    images in, nothing read from params), the curves logged, and the run's figures at the
    operating point."""
    import mlflow

    out.parent.mkdir(parents=True, exist_ok=True)
    servable = with_preprocessing(fitted.model, ctx.inputs.image_size, ctx.inputs.center_crop)
    attach(servable, reliability).save(out)
    if ctx.history_csv.is_file():
        mlflow.log_artifact(str(ctx.history_csv))
        mlflow.log_artifact(str(plot_history(ctx.history_csv, report / "curves.png")))
    best = {**fitted.keeper.best_logs, **tuned}  # at the operating point, when set
    return TrainResult(
        model=model_name,
        model_path=str(out),
        run_id="",
        model_uri="",
        best_epoch=fitted.keeper.best_epoch,
        epochs_run=fitted.epochs_run,
        resumed_from_epoch=fitted.resumed_from_epoch,
        val_balanced_accuracy=float(best.get("val_balanced_accuracy", float("nan"))),
        val_mel_recall=float(best.get("val_mel_recall", float("nan"))),
        val_accuracy=float(best.get("val_accuracy", float("nan"))),
        train_images_per_s=round(throughput, 1),
        replicas=ctx.device.replicas,
        mixed_precision=ctx.device.mixed_precision,
        val_ece_uncalibrated=float(tuned.get("val_ece_uncalibrated", math.nan)),
        val_ece=float(tuned.get("val_ece", math.nan)),
        temperature=float(tuned.get("temperature", math.nan)),
        **validation_figures(figures),
    )


def validation_figures(figures: dict[str, float]) -> dict[str, Any]:
    """The reliability's validation figures as :class:`TrainResult` fields."""
    prefix = "val_mel_sensitivity_at_"
    return {
        "val_set_size_mean": figures["val_set_size_mean"],
        "val_singleton_share": figures["val_singleton_share"],
        "val_refer_rate": figures["val_refer_rate"],
        "val_mel_sensitivity_at": {
            k.removeprefix(prefix): v for k, v in figures.items() if k.startswith(prefix)
        },
    }


def example_image(data_dir: str | Path, val_rows: pd.DataFrame) -> Any:
    """A validation image as a client sends it (its own size, not the model's input
    size): the logged model's input example, which must keep the input contract."""
    from skinlesion.model.preprocessing import read_image

    return read_image((Path(data_dir) / val_rows["image_path"].iloc[0]).read_bytes())


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
