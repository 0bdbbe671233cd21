"""What a study found, in the forms people use: ``best_params.yaml`` (dotted keys, to
apply with ``skinlesion tune apply`` or ``dvc exp run -S``), ``summary.json`` (the
figures), ``trials.csv`` and the study's plots; the same go to its MLflow parent run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from skinlesion.errors import SkinlesionError
from skinlesion.tuning.space import decode
from skinlesion.tuning.study import PARENT_RUN_ATTR, Search, redact

if TYPE_CHECKING:
    from skinlesion.config.params import Params

log = logging.getLogger(__name__)

BEST_FILE = "best_params.yaml"
SUMMARY_FILE = "summary.json"


class NoCompleteTrialError(SkinlesionError):
    """A study without any complete trial has no best values."""


def best_values(study: Any, params: Params, model: str) -> dict[str, Any]:
    """The best complete trial's values, as params values by dotted key."""
    space = params.tune.space(model)
    if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        raise NoCompleteTrialError(f"study {study.study_name} has no complete trial yet")
    return {k: decode(v, space[k]) for k, v in study.best_trial.params.items() if k in space}


def summarize(study: Any, params: Params, search: Search) -> dict[str, Any]:
    """Write the study's results to ``search.out_dir`` and its MLflow parent run; returns
    the summary."""
    out = search.out_dir
    out.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for trial in trials:
        states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
    best = best_values(study, params, search.model)
    baseline = next((t for t in trials if t.user_attrs.get("baseline")), None)
    summary = {
        "model": search.model,
        "study": search.study,
        "storage": redact(search.storage),
        "objective": f"{params.train.monitor} (validation, at the operating point)",
        "trials": states,
        "best_trial": study.best_trial.number,
        "best_value": study.best_value,
        "best_params": best,
        "best_mlflow_run_id": study.best_trial.user_attrs.get("mlflow_run_id"),
        "baseline_trial": None if baseline is None else baseline.number,
        "baseline_value": None if baseline is None else baseline.value,
        "baseline_state": None if baseline is None else baseline.state.name.lower(),
        "apply": f"skinlesion tune apply {out / BEST_FILE}",
        "dvc_exp_run": "dvc exp run " + " ".join(f"-S '{k}={_yaml(v)}'" for k, v in best.items()),
    }
    (out / BEST_FILE).write_text(
        f"# best of study {search.study}: trial {study.best_trial.number}, "
        f"{params.train.monitor} {study.best_value:.4f} on validation\n"
        + "".join(f"{key}: {_yaml(value)}\n" for key, value in best.items())
    )
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    study.trials_dataframe().to_csv(out / "trials.csv", index=False)
    plots = _plots(study, out)
    files = [out / BEST_FILE, out / SUMMARY_FILE, out / "trials.csv", *plots]
    _log_to_parent(study, summary, files)
    log.info(
        "best: trial %d, %s %.4f (baseline %s); wrote %s",
        summary["best_trial"],
        params.train.monitor,
        summary["best_value"],
        "-" if summary["baseline_value"] is None else f"{summary['baseline_value']:.4f}",
        out / BEST_FILE,
    )
    return summary


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _plots(study: Any, out: Path) -> list[Path]:
    """Optimisation history and parameter importances (Optuna's matplotlib plots)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    written = []
    for name, plot in (
        ("history.png", optuna_plots.plot_optimization_history),
        ("importance.png", optuna_plots.plot_param_importances),
        ("intermediate.png", optuna_plots.plot_intermediate_values),
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks these plots experimental
                axes = plot(study)
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            figure.savefig(out / name, dpi=100)
            plt.close(figure)
            written.append(out / name)
        except (ValueError, RuntimeError) as err:  # e.g. importances need 2 complete trials
            log.info("no %s: %s", name, err)
    return written


def _log_to_parent(study: Any, summary: dict[str, Any], files: list[Path]) -> None:
    import mlflow

    run_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if not run_id:
        return
    client = mlflow.MlflowClient()
    client.log_metric(run_id, "best_value", float(summary["best_value"]))
    client.log_metric(run_id, "finished_trials", sum(summary["trials"].values()))
    for key, value in summary["best_params"].items():
        client.log_param(run_id, f"best.{key}", str(value)[:500])
    client.set_tag(run_id, "tune.best_trial", str(summary["best_trial"]))
    for file in files:
        client.log_artifact(run_id, str(file))
