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
from components.open_study.component import open_study
from components.read_params.component import read_params
from components.tune_trials.component import tune_trials
from pipelines.data_preparation import build_data_preparation, prepare
from pipelines.tasks import on_gpu_nodes, secrets, step
from pipelines.training_pipeline import build_pipeline
from skinlesion.config.files import to_pipeline
from skinlesion.config.operations import ClusterSettings
from skinlesion.config.params import Params
from skinlesion.config.parse import for_cluster
from skinlesion.config.schema import ParamsError

PIPELINE_NAME = "skinlesion-tuning"


def build_tuning_pipeline(params: Params, cluster: ClusterSettings | None = None) -> Any:
    """The pipeline function; defaults from ``params`` (after the cluster overrides)."""
    cluster = cluster or params.cluster
    run = for_cluster(params)
    tunable = [m for m in run.tune.__pydantic_extra__ or {} if m in run.train.models]
    if not tunable:
        raise ParamsError("the tuning pipeline needs a tune.<model>.space of a train.models model")
    store = ("optuna",) if "optuna" in cluster.secrets else ()
    training_pipeline = build_pipeline(params, cluster)
    prepare_data = build_data_preparation(cluster)

    @dsl.pipeline(name=PIPELINE_NAME)
    def tuning_pipeline(
        params: str = to_pipeline(run),
        data_uri: str = cluster.data_uri,
        data_version: str = cluster.data_version,
        model_name: str = tunable[0],
        study: str = "",
        trials: int = run.tune.trials,
        train_best: bool = False,
    ):
        """Search the hyperparameters of one model on the validation part (never test),
        with trials in parallel on GPU nodes, then hand the best to training.

        The steps carry the training pipeline's numbers; the search adds 13 to 15.

        0. Read params: `params` (JSON text) validated as a whole; each later step gets
           only the sections it reads.
        1-4. Prepare data as the training pipeline does: fetch (a pinned `data_version`
           is checked), validate, split by lesion, oversample the training part only.
        13. Open the study (`study`, or `<model>-<run id>`): the current params are its
            first trial, the bar to beat; one MLflow parent run holds every trial.
        14. Run trials: `tune.parallel` GPU workers share the study until it holds
            `trials` complete or pruned trials; a trial behind the others is pruned per
            epoch.
        15. Pick the best trial on validation: best_params.yaml, summary and plots, and
            the run's params with the best values.
        5-12. With `train_best`, run the training pipeline on those params (its own change
              check, evaluation on the lesion-disjoint test part, the models' comparison
              and gated promotion).
        """
        reading = read_params(params=params)
        step(reading, step_title("read_params"), cluster)
        sections = reading.outputs
        prepared = prepare(prepare_data, data_uri, data_version, sections).outputs
        searched = {name: sections[name] for name in ("tune", "train", "input", "tracking")}
        opened = open_study(
            model_name=model_name,
            study=study,
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            **searched,
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
                raw_data=prepared["raw_data"],
                training_manifest=prepared["training_manifest"],
                data=sections["data"],
                validate=sections["validate"],
                params_hash=sections["params_hash"],
                kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                image=cluster.images["gpu"],
                **searched,
            )
            title = step_title("tune_trials", index)
            step(worker, title, cluster, kind="train", retry=True, cache=False)
            on_gpu_nodes(worker, cluster)
            secrets(worker, cluster, "mlflow", "s3", *store)
            workers.append(worker)
        chosen = best_params(model_name=model_name, study=opened.output, params=params)
        step(chosen.after(*workers), step_title("best_params"), cluster, cache=False)
        secrets(chosen, cluster, "mlflow", *store)
        with dsl.If(train_best == True, name="train-best"):  # noqa: E712 (a KFP condition)
            training_pipeline(
                params=chosen.outputs["params"], data_uri=data_uri, data_version=data_version
            ).set_display_name("5-12. Train, evaluate, compare and promote with the best")

    return tuning_pipeline
