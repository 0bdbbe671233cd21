"""`skinlesion tune`: the hyperparameter search from the command line, and `tune apply`
to write what it found into params.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skinlesion.cli.options import DataDirOpt, ParamsOpt, data_dir_of, user_errors
from skinlesion.config.files import apply_values, load_params, params_path

app = typer.Typer(
    help="Search hyperparameters with Optuna on the validation part (never test), and "
    "apply the best to params.yaml.",
    no_args_is_help=False,
    invoke_without_command=True,
)


@app.callback()
@user_errors
def tune(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Option("--model", help="A model with a tune.<model>.space, e.g. cnn.")
    ] = None,
    manifest: Annotated[
        Path,
        typer.Option("--manifest", help="Oversampled training manifest (its val rows judge)."),
    ] = Path("data/oversampled/manifest.csv"),
    trials: Annotated[
        int | None,
        typer.Option("--trials", min=1, help="Finished trials to end with (default tune.trials)."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=0,
            help="Seconds after which no trial starts (default tune.timeout_minutes; 0: none).",
        ),
    ] = None,
    study: Annotated[
        str | None,
        typer.Option("--study", help="Study name (default: <model>-<hash of space and params>)."),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option("--storage", help="Optuna storage URL (default tune.storage, see params)."),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out-dir",
            help="best_params.yaml, summary.json, plots (default reports/tune/<model>).",
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    params_file: ParamsOpt = None,
) -> None:
    """Run (or continue) a study: each trial trains the model, judged on validation."""
    if ctx.invoked_subcommand is not None:
        return
    if model is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)
    from skinlesion.tuning.report import summarize
    from skinlesion.tuning.study import run_search, search_for

    params = load_params(params_file)
    search = search_for(params, model, out_dir or Path("reports/tune") / model, study, storage)
    found = run_search(params, search, manifest, data_dir_of(data_dir, params), trials, timeout)
    summary = summarize(found, params, search)
    typer.echo(
        f"study {search.study}: {summary['trials']}; best trial {summary['best_trial']} "
        f"({params.train.monitor} {summary['best_value']:.4f} on validation); "
        f"apply with: {summary['apply']}"
    )


@app.command("apply")
@user_errors
def apply(
    best: Annotated[Path, typer.Argument(help="A best_params.yaml that `tune` wrote.")],
    params_file: ParamsOpt = None,
) -> None:
    """Write a search's best values into params.yaml (comments kept), then `dvc repro`."""
    import yaml

    values = yaml.safe_load(best.read_text(encoding="utf-8")) or {}
    changes = apply_values(params_path(params_file), values)
    typer.echo("\n".join(changes) if changes else "params.yaml already holds these values")
