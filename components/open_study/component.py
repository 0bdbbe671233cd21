"""Step 13: open the study that the trial workers share."""

from kfp import dsl

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def open_study(
    model_name: str,
    study: str,
    tune: str,
    train: str,
    input: str,
    tracking: str,
    kfp_run_id: str,
) -> str:
    """Create the Optuna study of ``model_name`` (``skinlesion.tuning.study``): its baseline
    trial queued and its MLflow parent run made, once, before the workers start. Returns
    the study's name: ``study``, or ``<model>-<pipeline run id>`` when empty."""
    from skinlesion.config.files import from_pipeline
    from skinlesion.tuning.study import prepare_study, search_for

    params = from_pipeline(tune=tune, train=train, input=input, tracking=tracking)
    search = search_for(params, model_name, "best", study or f"{model_name}-{kfp_run_id}")
    prepare_study(params, search)
    return search.study
