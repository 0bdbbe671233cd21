"""Step 15: the best trial on validation, as params for the training pipeline."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Output

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def best_params(
    model_name: str,
    study: str,
    params: str,
    best: Output[Artifact],
    report: Output[HTML],
) -> NamedTuple("Best", params=str, value=float):
    """Pick the study's best complete trial (``skinlesion.tuning.report``): ``best`` holds
    best_params.yaml, summary.json, trials.csv and the plots; ``params`` is the run's
    params with the best values applied, what the training pipeline takes."""
    import json
    import logging
    from collections import namedtuple
    from pathlib import Path

    from skinlesion.config.files import read_pipeline_params, to_pipeline
    from skinlesion.kfp_outputs import write_html
    from skinlesion.tuning.report import summarize
    from skinlesion.tuning.space import with_values
    from skinlesion.tuning.study import open_study, search_for

    params = read_pipeline_params(params)
    search = search_for(params, model_name, Path(best.path), study)
    summary = summarize(open_study(params, search), params, search)
    logging.getLogger(__name__).warning(
        "best: trial %s, %s on validation (baseline: %s); values %s",
        summary["best_trial"],
        summary["best_value"],
        summary["baseline_value"],
        summary["best_params"],
    )
    best.metadata.update({k: summary[k] for k in ("study", "best_trial", "best_value")})
    write_html(
        report.path,
        f"Search {summary['study']}",
        json.dumps(summary, indent=2, default=str),
        Path(best.path).glob("*.png"),
    )
    chosen = with_values(params, summary["best_params"])
    best_value = float(summary["best_value"])
    return namedtuple("Best", ["params", "value"])(to_pipeline(chosen), best_value)
