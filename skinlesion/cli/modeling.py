"""The model steps of the flow: train one model, build an ensemble of trained models,
evaluate a model on a split, compare them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skinlesion.cli.options import DataDirOpt, ParamsOpt, data_dir_of, fail, user_errors
from skinlesion.config.files import load_params

app = typer.Typer()


@app.command()
@user_errors
def train(
    model: Annotated[
        str, typer.Option("--model", help="A model section of params train, e.g. cnn.")
    ],
    manifest: Annotated[
        Path,
        typer.Option(
            "--manifest", help="Training manifest CSV (oversampled; its val rows select the model)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Where the .keras model goes.")],
    report_dir: Annotated[
        Path, typer.Option("--report-dir", help="metrics.json, history.csv, curves.png.")
    ],
    data_dir: DataDirOpt = None,
    params_file: ParamsOpt = None,
) -> None:
    """Train one model (CPU or all GPUs), checkpoint each epoch, track in MLflow."""
    from skinlesion.training.lifecycle import train_model

    params = load_params(params_file)
    try:
        result = train_model(
            model, manifest, data_dir_of(data_dir, params), out, report_dir, params
        )
    except ValueError as err:  # a params value the code cannot use
        raise fail(str(err)) from err
    typer.echo(
        f"{model}: best epoch {result.best_epoch}, val balanced accuracy "
        f"{result.val_balanced_accuracy:.3f}, val melanoma recall "
        f"{result.val_mel_recall:.3f}; MLflow run {result.run_id}; saved {out}"
    )


@app.command()
@user_errors
def ensemble(
    name: Annotated[
        str, typer.Option("--name", help="An ensemble of params train.ensembles, e.g. ensemble.")
    ],
    manifest: Annotated[
        Path,
        typer.Option("--manifest", help="The manifest its members were trained on (val rows)."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Where the .keras ensemble goes.")],
    report_dir: Annotated[Path, typer.Option("--report-dir", help="Where metrics.json goes.")],
    models_dir: Annotated[
        Path, typer.Option("--models-dir", help="The members' saved models, as <member>.keras.")
    ] = Path("models"),
    data_dir: DataDirOpt = None,
    params_file: ParamsOpt = None,
) -> None:
    """Build an ensemble from trained members (no retraining): its operating point,
    prediction sets and out-of-distribution reference on validation, tracked in MLflow."""
    from skinlesion.training.ensemble import build_ensemble_candidate

    params = load_params(params_file)
    if name not in params.train.ensembles:
        raise fail(f"no ensemble {name!r} in train.ensembles ({list(params.train.ensembles)})")
    members = {m: models_dir / f"{m}.keras" for m in params.train.ensembles[name].members}
    result = build_ensemble_candidate(
        name, members, manifest, data_dir_of(data_dir, params), out, report_dir, params
    )
    typer.echo(
        f"{name}: val balanced accuracy {result.val_balanced_accuracy:.3f}, val melanoma "
        f"recall {result.val_mel_recall:.3f}, {result.val_refer_rate:.0%} referred, "
        f"{result.val_singleton_share:.0%} single-class; MLflow run {result.run_id}; saved {out}"
    )


@app.command()
@user_errors
def evaluate(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="A .keras file or an MLflow model URI, "
            "e.g. models:/skin-lesion-classifier@champion.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Metrics JSON to write.")],
    data_dir: DataDirOpt = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            help="Evaluate only one split of this manifest (else every row of --data-dir)."
        ),
    ] = None,
    split_name: Annotated[str, typer.Option("--split", help="Split of --manifest.")] = "test",
    plots_dir: Annotated[
        Path | None, typer.Option(help="Write confusion matrix, ROC and reliability PNGs here.")
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(help="Write each image's lesion, class and probabilities (CSV) here."),
    ] = None,
    tta: Annotated[
        bool | None,
        typer.Option(
            "--tta/--no-tta", help="Test-time augmentation (default: params evaluate.tta)."
        ),
    ] = None,
    params_file: ParamsOpt = None,
) -> None:
    """Evaluate a model: balanced accuracy, macro AUC, per-class recall, melanoma
    sensitivity/specificity, calibration, confusion matrix, subgroups."""
    from skinlesion.evaluation.evaluate import evaluate_model, write_metrics
    from skinlesion.evaluation.plots import write_plots

    params = load_params(params_file)
    result = evaluate_model(model, data_dir_of(data_dir, params), params, manifest, split_name, tta)
    metrics = result.metrics
    write_metrics(metrics, out)
    if plots_dir is not None:
        write_plots(metrics, result.labels, result.probs, plots_dir, Path(model).stem)
    if predictions is not None:
        predictions.parent.mkdir(parents=True, exist_ok=True)
        result.predictions().to_csv(predictions, index=False)
    ci = metrics.get("ci95", {}).get("balanced_accuracy") or []
    interval = f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
    typer.echo(
        f"{metrics['n_images']} images: balanced accuracy {metrics['balanced_accuracy']:.3f}"
        f"{interval}, macro AUC {metrics['macro_auc']:.3f}, melanoma sensitivity "
        f"{metrics['melanoma']['sensitivity']:.3f}, accuracy {metrics['accuracy']:.3f}"
    )
    if "conformal" in metrics:
        c = metrics["conformal"]
        typer.echo(
            f"prediction sets at {1 - c['alpha']:.0%}: coverage {c['coverage']:.3f}, "
            f"{c['set_size_mean']:.2f} classes on average, {c['singleton_share']:.0%} single; "
            f"referred {c['refer_rate']:.0%}, accuracy of the rest {c['answered_accuracy']:.3f}"
        )


@app.command()
@user_errors
def compare(
    eval_dir: Annotated[
        Path,
        typer.Option(help="Folder of the evaluations: <model>/predictions.csv per model."),
    ] = Path("reports/eval"),
    out_dir: Annotated[
        Path, typer.Option(help="comparison.json, comparison.md and comparison.png go here.")
    ] = Path("reports/compare"),
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="A model to compare (repeat; default: train.models and train.ensembles).",
        ),
    ] = None,
    track: Annotated[
        bool, typer.Option("--track/--no-track", help="Also log the comparison to MLflow.")
    ] = True,
    params_file: ParamsOpt = None,
) -> None:
    """Compare the trained models on the same test lesions: paired lesion-bootstrap
    intervals of their differences, McNemar's test, per-class recall, their average."""
    from skinlesion.evaluation.compare import read_predictions, run_comparison

    params = load_params(params_file)
    names = models or params.train.candidates
    report = run_comparison(
        read_predictions(eval_dir, names),
        out_dir,
        params.compare,
        params.tracking.experiment if track else None,
    )
    for pair in report["pairs"]:
        diff = pair["difference"]["balanced_accuracy"]
        low_high = diff["interval"] or [float("nan")] * 2
        typer.echo(
            f"{pair['first']} - {pair['second']}: balanced accuracy {diff['value']:+.3f} "
            f"({low_high[0]:+.3f} to {low_high[1]:+.3f}), McNemar p "
            f"{pair['mcnemar']['p_value']:.3g}"
        )
    typer.echo(f"wrote {out_dir / 'comparison.md'}")
