"""Answering for a model: `predict` for image files, `serve` over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from skinlesion.cli.options import ParamsOpt, fail, track, user_errors
from skinlesion.config.files import load_params

app = typer.Typer()


@app.command()
@user_errors
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image file(s) (JPEG/PNG).")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="A .keras file or an MLflow model URI (default: params serve.model)."
        ),
    ] = None,
    tta: Annotated[bool, typer.Option("--tta/--no-tta", help="Test-time augmentation.")] = False,
    gradcam_dir: Annotated[
        Path | None, typer.Option(help="Write a Grad-CAM overlay PNG per image here.")
    ] = None,
    age: Annotated[
        float | None, typer.Option(help="Patient's age in years (models that use metadata).")
    ] = None,
    sex: Annotated[str | None, typer.Option(help="Patient's sex: male | female.")] = None,
    site: Annotated[
        str | None,
        typer.Option(help="Body site, as in HAM10000: back, face, lower extremity, ..."),
    ] = None,
    params_file: ParamsOpt = None,
) -> None:
    """Class probabilities per image (JSON lines), optionally with Grad-CAM overlays.

    Models trained with `input.metadata` also use the patient's age, sex and body site;
    leave any of them out when it is not known."""
    from skinlesion.model.loading import load_model
    from skinlesion.model.metadata import KNOWN_SEXES, KNOWN_SITES
    from skinlesion.serving.predict import predict_images

    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise fail(f"image(s) not found: {', '.join(missing)}")
    params = load_params(params_file)
    model = model or params.serve.model
    if model.startswith(("models:/", "runs:/")):
        track(params)
    loaded = load_model(model)
    if site is not None and site.strip().lower() not in KNOWN_SITES:
        raise fail(f"unknown --site {site!r}; one of: {', '.join(KNOWN_SITES)}")
    if sex is not None and sex.strip().lower() not in KNOWN_SEXES:
        raise fail(f"unknown --sex {sex!r}; one of: {', '.join(KNOWN_SEXES)}")
    patient = {"age": age, "sex": sex, "localization": site}
    for entry in predict_images(loaded, list(images), tta, gradcam_dir, patient):
        typer.echo(json.dumps(entry))


@app.command()
@user_errors
def serve(
    model: Annotated[
        str | None,
        typer.Option(help="MLflow model URI (default: params serve.model, the champion)."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address (default: serve.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serve.port).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Server processes (default: serve.workers).")
    ] = None,
    follow: Annotated[
        float | None,
        typer.Option(
            help="Re-check the alias every this many seconds and swap in a moved one; "
            "0: never (default: serve.follow_seconds)."
        ),
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            help="keras: the registered model (TensorFlow); onnx: its export, without "
            "TensorFlow (`skinlesion export --log` made it) (default: serve.runtime)."
        ),
    ] = None,
    log_uri: Annotated[
        str | None,
        typer.Option(
            envvar="SKINLESION_SERVE_LOG_URI",
            help="Prediction log: a folder or s3://bucket/prefix; '' for none "
            "(default: serve.log_uri).",
        ),
    ] = None,
    params_file: ParamsOpt = None,
) -> None:
    """Serve a registered model over HTTP with MLflow's scoring server.

    POST /invocations with {"dataframe_records": [{"image": "<base64 JPEG>", "age": 55,
    "sex": "female", "localization": "back"}]} (age, sex and site optional) answers with
    the 7 class probabilities and the decision per image. GET /model says which version
    serves; /ping is the health check."""
    from skinlesion.serving.server import serve as run_server

    params = load_params(params_file)
    settings = params.serve
    track(params)
    run_server(
        model or settings.model,
        host or settings.host,
        port or settings.port,
        workers or settings.workers,
        settings.follow_seconds if follow is None else follow,
        int(settings.max_body_mb * (1 << 20)),
        {
            "uri": settings.log_uri if log_uri is None else log_uri,
            "images": settings.log_images,
            "rotate_records": settings.log_rotate_records,
            "rotate_seconds": settings.log_rotate_seconds,
            "queue": settings.log_queue,
        },
        runtime or settings.runtime,
    )


@app.command("prune-log")
@user_errors
def prune_log(
    log_uri: Annotated[
        str | None,
        typer.Option(
            envvar="SKINLESION_SERVE_LOG_URI",
            help="Prediction log: a folder or s3://bucket/prefix (default: serve.log_uri).",
        ),
    ] = None,
    days: Annotated[
        int | None,
        typer.Option(
            min=0, help="Keep image bytes this many days (default: serve.log_retention_days)."
        ),
    ] = None,
    params_file: ParamsOpt = None,
) -> None:
    """Delete the image bytes the prediction log holds for longer than its retention, and
    keep the records (the monitor's evidence). Run it daily: the cluster's CronJob does."""
    import pandas as pd

    from skinlesion.serving.prediction_log import prune_images

    settings = load_params(params_file).serve
    uri = settings.log_uri if log_uri is None else log_uri
    if not uri:
        raise fail("no prediction log: give --log-uri or set serve.log_uri")
    keep = settings.log_retention_days if days is None else days
    cutoff = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=keep)
    typer.echo(prune_images(uri, cutoff).describe(cutoff))


@app.command("export")
@user_errors
def export(
    model: Annotated[
        str,
        typer.Argument(
            help="A registered version (models:/NAME/3, models:/NAME@champion) or a .keras file."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Folder to write the export to (default: a new temporary one)."),
    ] = None,
    log: Annotated[
        bool,
        typer.Option(
            "--log/--no-log",
            help="Log the export to the version's training run (export/), where "
            "`serve --runtime onnx` fetches it.",
        ),
    ] = False,
    params_file: ParamsOpt = None,
) -> None:
    """Export a model for runtimes without TensorFlow: ONNX (the network with its
    preprocessing) and its reliability, checked against the model on probe images."""
    from skinlesion.serving.exports import export_reference

    if model.startswith("models:/"):
        track(load_params(params_file))
    folder, manifest = export_reference(model, out, log)
    check = manifest["check"]
    typer.echo(
        f"exported {manifest['source']} to {folder}: largest probability difference "
        f"{check['max_probability_difference']:.1e} on {check['images']} probe images "
        f"(tolerance {manifest['tolerance']:.0e}){'; logged to its run as export/' if log else ''}"
    )


@app.command()
@user_errors
def score(
    input_: Annotated[
        str,
        typer.Option("--input", help="Folder of images (any depth), or an s3:// prefix of them."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Parquet file to write.")],
    model: Annotated[
        str | None,
        typer.Option(help="MLflow model URI (default: params serve.model, the champion)."),
    ] = None,
    chunk: Annotated[int, typer.Option(min=1, help="Images per chunk (one part file each).")] = 256,
    params_file: ParamsOpt = None,
) -> None:
    """Score a folder of images with a registered model, through the server's own path
    (sets and refer too): one Parquet row per image with the model and data versions.
    Killed, it resumes where it stopped when run again."""
    from skinlesion.serving.batch import score as score_images

    params = load_params(params_file)
    track(params)
    result = score_images(model or params.serve.model, input_, out, chunk)
    typer.echo(
        f"{result.images} images in {result.out} (model version {result.model_version}, "
        f"data {result.data_version}): {result.scored_now} scored now at "
        f"{result.images_per_s:.1f} images/s, {result.resumed} from an earlier run; "
        f"{result.referred} referred, {result.errors} refused"
    )
