"""The tuning pipeline: an Optuna search with trials in parallel GPU pods, then the best
values as params for the training pipeline (which it can run too).

Why workers and not one task per trial: Optuna proposes each trial from the results so
far, so a fixed list of configurations made up front would be a random search. Instead
``tune.parallel`` worker tasks share one study in a database (``$OPTUNA_STORAGE`` from a
Secret) and each asks it for the next trial until the study holds ``trials`` finished
ones, the way Optuna runs distributed. Workers are tasks written out at compile time,
not a ``ParallelFor``, so the same pipeline also runs under ``kfp.local``.
"""

from typing import Any

from kfp import dsl

from components import step_title
from components.best_params.component import best_params
from components.fetch_data.component import fetch_data
from components.open_study.component import open_study
from components.oversample.component import oversample
from components.split.component import split
from components.tune_trials.component import tune_trials
from components.validate.component import validate
from pipelines.tasks import on_gpu_nodes, secrets, step
from pipelines.training_pipeline import build_pipeline
from skinlesion.config.schema import ClusterSettings, Params, ParamsError

PIPELINE_NAME = "skinlesion-tuning"


def build_tuning_pipeline(params: Params, cluster: ClusterSettings | None = None) -> Any:
    """The pipeline function; defaults from ``params`` (after the cluster overrides)."""
    cluster = cluster or params.cluster
    run = params.for_cluster()
    tunable = [m for m in run.tune.__pydantic_extra__ or {} if m in run.train.models]
    if not tunable:
        raise ParamsError("the tuning pipeline needs a tune.<model>.space of a train.models model")
    store = ("optuna",) if "optuna" in cluster.secrets else ()
    training_pipeline = build_pipeline(params, cluster)

    @dsl.pipeline(name=PIPELINE_NAME)
    def tuning_pipeline(
        params: dict = run.raw(),
        data_uri: str = cluster.data_uri,
        data_version: str = cluster.data_version,
        model_name: str = tunable[0],
        study: str = "",
        trials: int = run.tune.trials,
        train_best: bool = False,
    ):
        """Search the hyperparameters of one model on the validation part (never test),
        with trials in parallel on GPU nodes, then hand the best to training.

        The steps carry the numbers of the training pipeline's (2, 5, 7-9 are training's
        own); the search adds 10 to 12.

        1. Fetch data: copy raw HAM10000 from `data_uri` (a pinned `data_version` is checked).
        3. Validate data with Great Expectations; invalid data fails the run here.
        4. Split by lesion; a leak fails the run.
        6. Oversample the training part only.
        10. Open the study (`study`, or `<model>-<run id>`): the current params are its
           first trial, the bar to beat; one MLflow parent run holds every trial.
        11. Run trials: `tune.parallel` GPU workers share the study until it holds `trials`
           complete or pruned trials; a trial behind the others is pruned per epoch.
        12. Pick the best trial on validation: best_params.yaml, summary and plots, and the
           run's params with the best values.
        7-9. With `train_best`, run the training pipeline on those params (its own change
           check, evaluation on the lesion-disjoint test part, and gated promotion).
        """
        fetch = fetch_data(data_uri=data_uri, data_version=data_version)
        step(fetch, step_title("fetch_data"), cluster, retry=True, cache=False)
        secrets(fetch, cluster, "s3")
        raw = fetch.outputs["raw_data"]
        checked = validate(raw_data=raw, params=params)
        step(checked, step_title("validate"), cluster)
        splitting = split(raw_data=raw, params=params).after(checked)
        step(splitting, step_title("split"), cluster)
        resampled = oversample(manifest=splitting.outputs["manifest"], params=params)
        step(resampled, step_title("oversample"), cluster)
        opened = open_study(
            model_name=model_name,
            study=study,
            params=params,
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        step(opened, step_title("open_study"), cluster, retry=True, cache=False)
        secrets(opened, cluster, "mlflow", *store)
        workers = []
        for index in range(run.tune.parallel):
            worker = tune_trials(
                model_name=model_name,
                study=opened.output,
                worker=index,
                trials=trials,
                raw_data=raw,
                training_manifest=resampled.outputs["training_manifest"],
                params=params,
                kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                image=cluster.images["gpu"],
            )
            step(
                worker,
                step_title("tune_trials", index),
                cluster,
                kind="train",
                retry=True,
                cache=False,
            )
            on_gpu_nodes(worker, cluster)
            secrets(worker, cluster, "mlflow", "s3", *store)
            workers.append(worker)
        chosen = best_params(model_name=model_name, study=opened.output, params=params)
        step(chosen.after(*workers), step_title("best_params"), cluster, cache=False)
        secrets(chosen, cluster, "mlflow", *store)
        with dsl.If(train_best == True, name="train-best"):  # noqa: E712 (a KFP condition)
            training_pipeline(
                params=chosen.outputs["params"], data_uri=data_uri, data_version=data_version
            ).set_display_name("7-9. Train, evaluate and promote with the best")

    return tuning_pipeline
