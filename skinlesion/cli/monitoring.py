"""Watching the served model: `monitor`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skinlesion.cli.options import ParamsOpt, user_errors
from skinlesion.config.files import load_params

app = typer.Typer()
DRIFT_EXIT = 2


@app.command()
@user_errors
def monitor(
    log: Annotated[
        str | None,
        typer.Option(help="Prediction log: a folder or s3:// prefix (default: monitor.log_uri)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Window start, UTC (e.g. 2026-11-23); default: monitor.window_days ago."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Window end (excluded), UTC; default: now.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="The served model's URI (default: monitor.model, the champion)."),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(help="Reference table (default: the one the model's training run logged)."),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(
            help="Labelled data, a folder or s3:// prefix (HAM10000 layout, where `data "
            "add-labels` writes): report "
            "the realised accuracy of the served versions by week."
        ),
    ] = None,
    reviews: Annotated[
        str | None,
        typer.Option(
            envvar="SKINLESION_REVIEW_STORE",
            help="Review store (SQLAlchemy URL) whose agreed answers --labels also counts "
            "(default: review.store).",
        ),
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("--out-dir", help="Where monitor.json and report.html go.")
    ] = Path("reports/monitor"),
    fail_on_drift: Annotated[
        bool,
        typer.Option("--fail-on-drift", help=f"Exit with code {DRIFT_EXIT} when drift is found."),
    ] = False,
    params_file: ParamsOpt = None,
) -> None:
    """Compare a window of the prediction log with the served model's reference (Evidently
    drift tests of the patient fields, the decisions, their confidence and the image
    embeddings): verdict stable, drift or insufficient, an HTML report, an MLflow run."""
    from skinlesion.monitoring.monitor import run_monitor

    params = load_params(params_file)
    settings = params.monitor
    result = run_monitor(
        settings,
        log or settings.log_uri,
        out_dir,
        since,
        until,
        model,
        reference,
        labels,
        params.data.workers,
        reviews=params.review.store if reviews is None else reviews,
    )
    typer.echo(result.describe())
    typer.echo(f"summary {result.summary}; report {result.report or 'none'}; run {result.run_id}")
    if fail_on_drift and result.verdict == "drift":
        raise typer.Exit(DRIFT_EXIT)
