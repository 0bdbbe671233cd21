"""Hyperparameter search: an Optuna study whose trials are real trainings, judged on the
validation part only.

Why it looks like this:

* Honest: a trial is :func:`skinlesion.training.lifecycle.train_model` with the trial's
  values merged into params (and validated like params.yaml). Its score is ``train.monitor`` on the
  validation rows, at the operating point, as promotion judges candidates; the pruner sees
  the same metric per epoch. Training never loads the test rows, so no trial can.
* Resumable and shared: the study lives in an Optuna storage (a sqlite file locally, a
  database on the cluster). A killed search started again continues the same study; the
  trial it was in is failed once its heartbeat is stale and retried with the same values.
  Parallel workers (the tuning pipeline's GPU tasks) share one study the same way.
* Tracked: one MLflow parent run per study, a nested run per trial (params, per-epoch
  metrics, ``tune.state`` complete or pruned); the parent gets the best values and the
  study's plots (:mod:`skinlesion.tuning.report`).
* The first trial is the current params.yaml (``tune.baseline_first``): the bar to beat.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skinlesion.config.operations import Dimension
from skinlesion.provenance import RunOrigin
from skinlesion.tuning.space import current_values, suggest, with_values

if TYPE_CHECKING:
    from skinlesion.config.params import Params

log = logging.getLogger(__name__)

STORAGE_ENV = "OPTUNA_STORAGE"
PARENT_RUN_ATTR = "mlflow_run_id"
FINISHED = ("COMPLETE", "PRUNED")


@dataclass(frozen=True)
class Search:
    """Where a study lives and what it searches."""

    model: str
    study: str
    storage: str  # an Optuna RDB URL
    out_dir: Path  # best_params.yaml, summary.json, plots
    work_dir: Path  # trials' scratch folders


def storage_url(params: Params, storage: str | None = None) -> str:
    """The study database: the argument, ``tune.storage``, ``$OPTUNA_STORAGE``, else a
    sqlite file in ``tune.work_dir`` (no server needed locally)."""
    url = storage or params.tune.storage or os.environ.get(STORAGE_ENV)
    if url:
        return url
    folder = Path(params.tune.work_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'studies.db'}"


def default_study_name(params: Params, model: str) -> str:
    """``<model>-<hash>`` of the space and every stage setting: the same params continue
    the same study, changed ones start a new one (their scores would not compare)."""
    space = {k: d.model_dump(mode="json") for k, d in params.tune.space(model).items()}
    scope = {"space": space, "stages": params.stages()}
    digest = hashlib.sha256(json.dumps(scope, sort_keys=True, default=str).encode())
    return f"{model}-{digest.hexdigest()[:10]}"


def search_for(
    params: Params,
    model: str,
    out_dir: str | Path,
    study: str | None = None,
    storage: str | None = None,
) -> Search:
    """The search of ``model``: its study (named, or after params), storage and folders."""
    params.tune.space(model)  # a clear error when the model has no space
    return Search(
        model=model,
        study=study or default_study_name(params, model),
        storage=storage_url(params, storage),
        out_dir=Path(out_dir),
        work_dir=Path(params.tune.work_dir),
    )


def open_study(params: Params, search: Search, worker: int = 0) -> Any:
    """Create or load the study. Heartbeats let a restarted (or another) worker fail a
    trial whose process died and retry its values once."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    tune = params.tune
    with warnings.catch_warnings():  # heartbeats are marked experimental, yet documented
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(
            search.storage,
            heartbeat_interval=tune.heartbeat_seconds,
            grace_period=2 * tune.heartbeat_seconds,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
    pruner: optuna.pruners.BasePruner
    if tune.pruner == "median":  # from the first finished trial on (the baseline, usually):
        # a trial behind the median of all trials at the same epoch stops there
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=1, n_warmup_steps=tune.pruner_warmup_epochs
        )
    elif tune.pruner == "halving":
        pruner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=max(1, tune.pruner_warmup_epochs)
        )
    else:
        pruner = optuna.pruners.NopPruner()
    return optuna.create_study(
        study_name=search.study,
        storage=storage,
        sampler=optuna.samplers.TPESampler(
            seed=tune.seed + worker, n_startup_trials=tune.startup_trials
        ),
        pruner=pruner,
        direction="maximize",
        load_if_exists=True,
    )


def worker_id() -> str:
    """This process, as trials record who ran them (pods differ by host name)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def finished_trials(study: Any) -> int:
    return sum(t.state.name in FINISHED for t in study.get_trials(deepcopy=False))


class EpochReporter:
    """Reports each epoch's validation score to the trial; stops a trial the pruner
    judges behind. Remembers the MLflow run, so a pruned run can be marked as such."""

    def __init__(self, trial: Any, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor
        self.step = 0
        self.best = float("-inf")
        self.run_id: str | None = None

    def __call__(self, epoch: int, logs: dict[str, Any]) -> None:
        import mlflow
        import optuna

        active = mlflow.active_run()
        self.run_id = active.info.run_id if active else self.run_id
        value = float(logs.get(self.monitor, float("nan")))
        self.best = max(self.best, value)
        self.trial.report(value, self.step)
        self.step += 1  # a running count, so a second phase continues the steps
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"trial {self.trial.number} pruned after epoch {self.step}: "
                f"{self.monitor} {value:.3f} is behind the other trials"
            )


def run_search(
    params: Params,
    search: Search,
    manifest: str | Path,
    data_dir: str | Path,
    trials: int | None = None,
    timeout_seconds: float | None = None,
    worker: int = 0,
    origin: RunOrigin | None = None,
) -> Any:
    """Run trials until the study holds ``trials`` finished ones, or until no trial may
    start after ``timeout_seconds`` (default ``tune.timeout_minutes``; 0: no limit);
    returns the study. Safe to run in several processes on one storage. ``origin`` (a
    cluster task's pipeline run, image and params hash) tags every trial's run; a trial's
    ``params.hash`` is the hash of the params the search started from, on a laptop and on
    the cluster alike (its own values are the run's params)."""
    import mlflow
    import optuna

    target = trials or params.tune.trials
    seconds = params.tune.timeout_minutes * 60 if timeout_seconds is None else timeout_seconds
    space = params.tune.space(search.model)
    study = prepare_study(params, search, worker)
    parent = study.user_attrs[PARENT_RUN_ATTR]
    done = finished_trials(study)
    if done >= target:
        log.info("study %s already holds %d finished trials", search.study, done)
        return study
    log.info(
        "study %s: %d of %d trials finished; storage %s",
        search.study,
        done,
        target,
        redact(search.storage),
    )
    origin = origin or RunOrigin()
    if origin.params_hash is None:
        origin = replace(origin, params_hash=params.hash())
    objective = _objective(params, search, space, manifest, data_dir, origin)
    with mlflow.start_run(run_id=parent):
        study.optimize(
            objective,
            timeout=seconds or None,  # 0: no limit
            callbacks=[
                optuna.study.MaxTrialsCallback(
                    target, states=tuple(optuna.trial.TrialState[s] for s in FINISHED)
                ),
                _progress(target),
            ],
            gc_after_trial=True,
        )
    return study


def prepare_study(params: Params, search: Search, worker: int = 0) -> Any:
    """The study, ready for trials: created when new, the baseline queued as its first
    trial, and its MLflow parent run made (once; every later worker finds it)."""
    from skinlesion.tracking import configure_tracking

    configure_tracking(params.tracking.experiment)
    study = open_study(params, search, worker)
    if params.tune.baseline_first:
        baseline = current_values(params, params.tune.space(search.model))
        if baseline is not None:
            study.enqueue_trial(baseline, user_attrs={"baseline": True}, skip_if_exists=True)
    _parent_run(study, search)
    return study


def _objective(
    params: Params,
    search: Search,
    space: Mapping[str, Dimension],
    manifest: str | Path,
    data_dir: str | Path,
    origin: RunOrigin | None,
) -> Any:
    import keras
    import mlflow
    import optuna

    from skinlesion.training.lifecycle import train_model

    monitor = params.train.monitor

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, space)
        trial.set_user_attr("worker", worker_id())
        scratch = search.work_dir / "trials" / f"{search.study}-{trial.number}"
        shutil.rmtree(scratch, ignore_errors=True)
        reporter = EpochReporter(trial, monitor)
        log.info("trial %d: %s", trial.number, values)
        try:
            result = train_model(
                search.model,
                manifest,
                data_dir,
                scratch / "model.keras",
                scratch / "report",
                with_values(params, values, scratch),
                on_epoch=reporter,
                run_name=f"trial-{trial.number}",
                tags={"tune.study": search.study, "tune.trial": str(trial.number)},
                log_model=False,
                origin=origin,
            )
        except optuna.TrialPruned:
            if reporter.run_id:
                client = mlflow.MlflowClient()
                client.set_tag(reporter.run_id, "tune.state", "pruned")
                client.set_terminated(reporter.run_id, "KILLED")
            raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            keras.backend.clear_session()
        value = getattr(result, monitor, None)
        value = reporter.best if value is None else float(value)
        mlflow.MlflowClient().set_tag(result.run_id, "tune.state", "complete")
        trial.set_user_attr("mlflow_run_id", result.run_id)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("val_mel_recall", result.val_mel_recall)
        return value

    return objective


def _parent_run(study: Any, search: Search) -> str:
    """The study's MLflow run: made once, found again by every later worker."""
    import mlflow

    run_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if run_id:
        return str(run_id)
    with mlflow.start_run(run_name=f"tune-{search.study}") as run:
        mlflow.set_tags({"tune.study": search.study, "tune.model": search.model})
    study.set_user_attr(PARENT_RUN_ATTR, run.info.run_id)
    return run.info.run_id


def _progress(target: int) -> Any:
    def report(study: Any, trial: Any) -> None:
        best = study.best_trial if finished_trials(study) and _has_complete(study) else None
        log.info(
            "trial %d %s (value %s); %d of %d finished; best so far: %s",
            trial.number,
            trial.state.name.lower(),
            "-" if trial.value is None else f"{trial.value:.4f}",
            finished_trials(study),
            target,
            "-" if best is None else f"trial {best.number} ({best.value:.4f})",
        )

    return report


def _has_complete(study: Any) -> bool:
    return any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))


def redact(url: str) -> str:
    """A storage URL fit for logs: the password hidden."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
