"""The registry steps: has anything changed since the champion, promote through the gate,
upgrade a version registered in an earlier form."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from skinlesion.cli.options import DataDirOpt, ParamsOpt, data_dir_of, fail, track, user_errors
from skinlesion.config.files import load_params

app = typer.Typer()


@app.command("check-changes")
@user_errors
def check_changes(
    data_dir: DataDirOpt = None,
    params_file: ParamsOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the check as JSON here.")] = None,
) -> None:
    """Say whether data, params, code or image differ from the champion's training (what
    a scheduled run checks before it trains anything)."""
    from skinlesion.promotion.changes import run_change_check

    params = load_params(params_file)
    check = run_change_check(params, data_dir_of(data_dir, params), out)
    typer.echo(check.reason)


@app.command()
@user_errors
def promote(
    manifest: Annotated[
        Path,
        typer.Option(
            "--manifest",
            help="Split manifest; its test part, less lesions either model saw, is the gate.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Decision JSON to write.")],
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--model", help="Model(s) to register (default: train.models and train.ensembles)."
        ),
    ] = None,
    reports_dir: Annotated[
        Path, typer.Option(help="Holds train/<model>/metrics.json and eval/<model>/metrics.json.")
    ] = Path("reports"),
    data_dir: DataDirOpt = None,
    params_file: ParamsOpt = None,
) -> None:
    """Register new models, alias the one best on validation `challenger`, and move
    `champion` if it wins the paired gate on test lesions neither model saw."""
    from skinlesion.promotion.promote import PromotionError, promote_from_reports

    params = load_params(params_file)
    try:
        decision = promote_from_reports(
            manifest,
            data_dir_of(data_dir, params),
            reports_dir,
            models or params.train.candidates,
            params,
        )
    except PromotionError as err:
        raise fail(f"promotion stopped: {err}") from err
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(decision, indent=2) + "\n")
    typer.echo(decision["reason"])


@app.command("upgrade-model")
@user_errors
def upgrade_model(
    model: Annotated[
        str, typer.Argument(help="models:/<name>/<version> or models:/<name>@<alias>.")
    ],
    params_file: ParamsOpt = None,
) -> None:
    """Register a version made before models carried their preprocessing again, in the
    form `skinlesion serve` serves; its aliases move to the new version (same weights)."""
    import mlflow

    from skinlesion.promotion.upgrade import upgrade_model as upgrade

    track(load_params(params_file))
    done = upgrade(mlflow.MlflowClient(), model)
    moved = f"; moved {', '.join(done.aliases)}" if done.aliases else ""
    typer.echo(f"{done.name} version {done.old_version} -> version {done.new_version}{moved}")
