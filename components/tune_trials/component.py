"""Step 14: one worker of the search (a GPU task); the workers share the study."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def tune_trials(
    model_name: str,
    study: str,
    worker: int,
    trials: int,
    raw_data: Input[Dataset],
    training_manifest: Input[Dataset],
    tune: str,
    train: str,
    input: str,
    data: str,
    validate: str,
    tracking: str,
    params_hash: str,
    kfp_run_id: str,
    image: str,
    summary: Output[Metrics],
):
    """Run trials of ``study`` until it holds ``trials`` finished ones
    (``skinlesion.tuning.study.run_search``): each a training of ``model_name`` judged on the
    validation rows. ``worker`` offsets the sampler's seed, so that parallel workers do
    not propose the same values. A retried task's dead trial is failed and retried."""
    from pathlib import Path

    from skinlesion.config.files import from_pipeline
    from skinlesion.provenance import RunOrigin
    from skinlesion.tuning.study import finished_trials, run_search, search_for, worker_id

    params = from_pipeline(
        tune=tune, train=train, input=input, data=data, validate=validate, tracking=tracking
    )
    search = search_for(params, model_name, "best", study)
    found = run_search(
        params,
        search,
        Path(training_manifest.path),
        Path(raw_data.path),
        trials,
        worker=worker,
        origin=RunOrigin(kfp_run_id, image, params_hash),
    )
    mine = [t for t in found.trials if t.user_attrs.get("worker") == worker_id()]
    summary.log_metric("trials_run_here", len(mine))
    summary.log_metric("finished_trials", finished_trials(found))
