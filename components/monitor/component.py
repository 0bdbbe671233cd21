"""Step 17: served traffic against the champion's reference: stable, drift or insufficient."""

from kfp import dsl
from kfp.dsl import HTML, Metrics, Output

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def monitor(
    log_uri: str,
    since: str,
    until: str,
    labels_uri: str,
    monitor: str,
    report: Output[HTML],
    summary: Output[Metrics],
) -> str:
    """Judge a window of the prediction log at ``log_uri`` (``since``/``until``, "" for the
    last ``monitor.window_days`` days) against the reference of ``monitor.model``
    (``skinlesion.monitoring.monitor``): Evidently's HTML report, one metric per test
    score, and the verdict as the output (``stable``, ``drift`` or ``insufficient``).
    ``labels_uri`` (a folder or s3:// prefix of labelled data, "" for none) adds the
    realised accuracy of the served versions by week, counting the reviewed images of the
    review store that ``$SKINLESION_REVIEW_STORE`` names (the review Secret's URL), if any."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from skinlesion.config.files import from_pipeline
    from skinlesion.monitoring.monitor import run_monitor

    settings = from_pipeline(monitor=monitor).monitor
    with tempfile.TemporaryDirectory() as work:
        result = run_monitor(
            settings,
            log_uri,
            Path(work) / "out",
            since or None,
            until or None,
            labels=labels_uri,
            reviews=os.environ.get("SKINLESION_REVIEW_STORE"),
        )
        if result.report:
            shutil.copyfile(result.report, report.path)
        else:
            Path(report.path).write_text(f"<p>{result.describe()}</p>")
    report.metadata.update({"verdict": result.verdict, "model_version": result.model_version})
    summary.log_metric("images", result.images)
    summary.log_metric("drift", int(result.verdict == "drift"))
    for check in result.checks:
        summary.log_metric(f"drift_{check.name}", round(check.score, 4))
    for week in result.realised:
        if week["labelled"]:
            summary.log_metric(f"realised_accuracy_{week['week']}", round(week["accuracy"], 4))
    return result.verdict
