"""The `skinlesion` command line: one command per step of the flow.

DVC stages and KFP components call these same commands / functions, so there is one
implementation per step. Heavy libraries (TensorFlow, GX) are imported inside commands,
so that `--help` stays fast.

The module is long because it is the whole `--help` surface in one place: each command
is a few lines of typed options around one library call, and spreading them over files
would hide what the tool offers. Command groups of other packages (the Kubeflow
`pipeline` commands) come in through entry points instead.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from skinlesion.errors import SkinlesionError
from skinlesion.params import Params, load_params

app = typer.Typer(
    help="Validate, split, train, evaluate and promote HAM10000 skin-lesion classifiers "
    "on lesion-disjoint data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Get HAM10000: the official download or a synthetic stand-in.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
infra_app = typer.Typer(help="Cluster infrastructure helpers (S3 buckets).", no_args_is_help=True)
app.add_typer(infra_app, name="infra")
# Other packages add command groups through this entry-point group (the Kubeflow
# `pipeline` commands come from `pipelines.cli`), so the library never imports them.
PLUGIN_GROUP = "skinlesion.commands"

ParamsOpt = Annotated[
    Path | None,
    typer.Option(
        "--params", help="params.yaml to read (default: ./params.yaml or $SKINLESION_PARAMS)."
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="HAM10000 folder (default: params.yaml data.raw_dir)."),
]


def _data_dir(data_dir: Path | None, params: Params) -> Path:
    return data_dir or Path(params.data.raw_dir)


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Errors a user can fix end the command with their message and exit code 1."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SkinlesionError as err:
            raise _fail(str(err)) from err

    return run


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(message, err=True, fg=typer.colors.RED)
    return typer.Exit(code)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Set up logging for every command."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # GX and matplotlib narrate their internals at INFO; keep the user's log readable.
    for noisy in ("great_expectations", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


@data_app.command("download")
@user_errors
def data_download(
    dest: Annotated[Path, typer.Option("--dest", help="Folder to download into.")],
    server: Annotated[
        str, typer.Option(help="Dataverse server.")
    ] = "https://dataverse.harvard.edu",
    doi: Annotated[str, typer.Option(help="Dataset DOI.")] = "doi:10.7910/DVN/DBW86T",
    all_files: Annotated[
        bool, typer.Option("--all", help="Also get the ISIC test set and segmentations.")
    ] = False,
) -> None:
    """Download HAM10000 from Harvard Dataverse: verified checksums, resumable, unpacked."""
    from skinlesion.download import REQUIRED_PREFIXES, DownloadError, download_ham10000

    try:
        root = download_ham10000(dest, server, doi, None if all_files else REQUIRED_PREFIXES)
    except DownloadError as err:
        raise _fail(f"download failed: {err}") from err
    typer.echo(f"HAM10000 ready in {root}")


@data_app.command("synth")
@user_errors
def data_synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dataset into.")],
    n: Annotated[int, typer.Option("--n", min=7, help="Number of images.")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    layout: Annotated[
        str, typer.Option(help="'single' (images/) or 'official' (HAM10000_images_part_1/2).")
    ] = "single",
) -> None:
    """Write a small SYNTHETIC dataset in the HAM10000 layout (for tests and demos only)."""
    from skinlesion.synth import make_synthetic_dataset

    if layout not in ("single", "official"):
        raise _fail("--layout must be 'single' or 'official'", 2)
    frame = make_synthetic_dataset(out, n, seed, layout=layout)  # type: ignore[arg-type]
    typer.echo(
        f"synthetic dataset: {len(frame)} images of {frame['lesion_id'].nunique()} lesions in {out}"
    )


@data_app.command("version")
@user_errors
def data_version_command(
    location: Annotated[str, typer.Argument(help="A HAM10000 folder or s3://bucket/prefix.")] = "",
    params_file: ParamsOpt = None,
) -> None:
    """Print the data version of a folder or S3 prefix (default: params data.raw_dir): the
    version MLflow runs, registered models and pinned pipeline runs name."""
    from skinlesion.data_versions import data_version

    params = load_params(params_file)
    typer.echo(data_version(location or params.data.raw_dir, params.data.workers))


@data_app.command("publish")
@user_errors
def data_publish(
    to: Annotated[
        str, typer.Option("--to", help="S3 prefix of published versions, e.g. s3://b/ham10000.")
    ],
    data_dir: DataDirOpt = None,
    params_file: ParamsOpt = None,
) -> None:
    """Validate a HAM10000 folder and upload it to <to>/<version>/, for a pipeline run to
    pin; invalid data is refused before anything is uploaded."""
    from skinlesion.publish import publish

    params = load_params(params_file)
    target = publish(_data_dir(data_dir, params), to, params.validate_, params.data.workers)
    version = target.rsplit("/", 1)[1]
    typer.echo(f"published version {version} at {target}")
    typer.echo(
        f"pin it: skinlesion pipeline submit --param data_uri={target} "
        f"--param data_version={version}"
    )


@data_app.command("diff")
@user_errors
def data_diff(
    old: Annotated[str, typer.Argument(help="The earlier folder or s3:// prefix.")],
    new: Annotated[str, typer.Argument(help="The later folder or s3:// prefix.")],
    params_file: ParamsOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also write JSON here.")] = None,
) -> None:
    """What changed between two versions of the data: images added, removed and changed,
    lesions added and removed, images per class before and after."""
    from dataclasses import asdict

    from skinlesion.data_versions import diff_locations

    diff = diff_locations(old, new, load_params(params_file).data.workers)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(asdict(diff), indent=2) + "\n")
    typer.echo(diff.describe())


@app.command()
@user_errors
def validate(
    report_dir: Annotated[
        Path, typer.Option("--report-dir", help="Where Data Docs and validation.json go.")
    ],
    data_dir: DataDirOpt = None,
    params_file: ParamsOpt = None,
) -> None:
    """Validate a HAM10000 folder with Great Expectations; non-zero exit when invalid."""
    from skinlesion.validation import validate_dataset

    params = load_params(params_file)
    root = _data_dir(data_dir, params)
    report = validate_dataset(root, report_dir, params.validate_, params.data.workers)
    if not report.success:
        raise _fail(report.describe())
    typer.echo(report.describe())


@app.command()
@user_errors
def split(
    out: Annotated[Path, typer.Option("--out", help="Manifest CSV to write.")],
    summary: Annotated[Path | None, typer.Option(help="JSON counts per split and class.")] = None,
    data_dir: DataDirOpt = None,
    params_file: ParamsOpt = None,
) -> None:
    """Lesion-grouped, stratified train/val/test split; fails on any leakage."""
    from skinlesion.split import split_dataset, split_summary, write_manifest

    params = load_params(params_file)
    manifest = split_dataset(_data_dir(data_dir, params), params.split, params.data.workers)
    write_manifest(manifest, out, summary)
    typer.echo(
        json.dumps(
            {
                k: {"images": v["images"], "lesions": v["lesions"]}
                for k, v in split_summary(manifest).items()
            }
        )
    )


@app.command("check-leakage")
@user_errors
def check_leakage(
    manifest: Annotated[
        list[Path], typer.Argument(help="Manifest CSV(s); several are checked together.")
    ],
) -> None:
    """Fail when a lesion or identical image content appears in more than one split."""
    import pandas as pd

    from skinlesion.leakage import assert_no_leakage
    from skinlesion.split import read_manifest

    frame = pd.concat([read_manifest(m) for m in manifest], ignore_index=True)
    assert_no_leakage(frame)
    typer.echo(f"no leakage across {len(frame)} rows")


@app.command("check-changes")
@user_errors
def check_changes(
    data_dir: DataDirOpt = None,
    params_file: ParamsOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the check as JSON here.")] = None,
) -> None:
    """Say whether data, params, code or image differ from the champion's training (what
    a scheduled run checks before it trains anything)."""
    import mlflow

    from skinlesion.changes import check_for_changes
    from skinlesion.tracking import configure_tracking

    params = load_params(params_file)
    configure_tracking(params.train.mlflow_experiment)
    check = check_for_changes(
        mlflow.MlflowClient(),
        params.promote.registered_model,
        params,
        _data_dir(data_dir, params),
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(check.__dict__, indent=2) + "\n")
    typer.echo(check.reason)


@app.command()
@user_errors
def eda(
    manifest: Annotated[Path, typer.Option("--manifest", help="Split manifest CSV.")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Folder for plots and summary.md.")],
    data_dir: DataDirOpt = None,
    params_file: ParamsOpt = None,
) -> None:
    """Exploratory data analysis: class balance, demographics, samples per class."""
    from skinlesion.eda import run_eda
    from skinlesion.split import read_manifest

    params = load_params(params_file)
    files = run_eda(
        read_manifest(manifest),
        _data_dir(data_dir, params),
        out_dir,
        params.eda,
    )
    typer.echo(f"wrote {len(files)} files to {out_dir}")


@app.command()
@user_errors
def oversample(
    manifest: Annotated[Path, typer.Option("--manifest", help="Split manifest CSV.")],
    out: Annotated[Path, typer.Option("--out", help="Training manifest CSV to write.")],
    params_file: ParamsOpt = None,
) -> None:
    """Oversample the TRAINING part only (val/test untouched); re-checks leakage."""
    from skinlesion.oversample import oversample_manifest
    from skinlesion.split import read_manifest

    params = load_params(params_file)
    result = oversample_manifest(read_manifest(manifest), params.oversample)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(out, index=False)
    counts = result[result["split"] == "train"]["dx"].value_counts().sort_index()
    typer.echo(f"training rows per class after oversampling: {counts.to_dict()}")


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
    from skinlesion.train import train_model

    params = load_params(params_file)
    try:
        result = train_model(model, manifest, _data_dir(data_dir, params), out, report_dir, params)
    except ValueError as err:  # a params value the code cannot use
        raise _fail(str(err)) from err
    typer.echo(
        f"{model}: best epoch {result.best_epoch}, val balanced accuracy "
        f"{result.val_balanced_accuracy:.3f}, val melanoma recall "
        f"{result.val_mel_recall:.3f}; MLflow run {result.run_id}; saved {out}"
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
    from skinlesion.evaluate import evaluate_model, write_metrics
    from skinlesion.evaluation_plots import write_plots

    params = load_params(params_file)
    result = evaluate_model(model, _data_dir(data_dir, params), params, manifest, split_name, tta)
    metrics = result.metrics
    write_metrics(metrics, out)
    if plots_dir is not None:
        write_plots(metrics, result.labels, result.probs, plots_dir, Path(model).stem)
    ci = metrics.get("ci95", {}).get("balanced_accuracy") or []
    interval = f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
    typer.echo(
        f"{metrics['n_images']} images: balanced accuracy {metrics['balanced_accuracy']:.3f}"
        f"{interval}, macro AUC {metrics['macro_auc']:.3f}, melanoma sensitivity "
        f"{metrics['melanoma']['sensitivity']:.3f}, accuracy {metrics['accuracy']:.3f}"
    )


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
        typer.Option("--model", help="Model(s) to register (default: params train.models)."),
    ] = None,
    reports_dir: Annotated[
        Path, typer.Option(help="Holds train/<model>/metrics.json and eval/<model>/metrics.json.")
    ] = Path("reports"),
    data_dir: DataDirOpt = None,
    params_file: ParamsOpt = None,
) -> None:
    """Register new models, alias the one best on validation `challenger`, and move
    `champion` if it wins the paired gate on test lesions neither model saw."""
    from skinlesion.promote import PromotionError, promote_from_reports

    params = load_params(params_file)
    try:
        decision = promote_from_reports(
            manifest,
            _data_dir(data_dir, params),
            reports_dir,
            models or list(params.train.models),
            params,
        )
    except PromotionError as err:
        raise _fail(f"promotion stopped: {err}") from err
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(decision, indent=2) + "\n")
    typer.echo(decision["reason"])


@app.command()
@user_errors
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image file(s) (JPEG/PNG).")],
    model: Annotated[
        str, typer.Option("--model", help="A .keras file or an MLflow model URI.")
    ] = "models:/skin-lesion-classifier@champion",
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
    from skinlesion.evaluate import load_model
    from skinlesion.metadata import KNOWN_SEXES, KNOWN_SITES
    from skinlesion.predict import predict_images
    from skinlesion.tracking import configure_tracking

    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise _fail(f"image(s) not found: {', '.join(missing)}")
    params = load_params(params_file)
    if model.startswith("models:/") or model.startswith("runs:/"):
        configure_tracking(params.train.mlflow_experiment)
    loaded = load_model(model)
    if site is not None and site.strip().lower() not in KNOWN_SITES:
        raise _fail(f"unknown --site {site!r}; one of: {', '.join(KNOWN_SITES)}")
    if sex is not None and sex.strip().lower() not in KNOWN_SEXES:
        raise _fail(f"unknown --sex {sex!r}; one of: {', '.join(KNOWN_SEXES)}")
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
    params_file: ParamsOpt = None,
) -> None:
    """Serve a registered model over HTTP with MLflow's scoring server.

    POST /invocations with {"dataframe_records": [{"image": "<base64 JPEG>", "age": 55,
    "sex": "female", "localization": "back"}]} (age, sex and site optional) answers with
    the 7 class probabilities and the decision per image. GET /model says which version
    serves; /ping is the health check."""
    from skinlesion.serve import serve as run_server
    from skinlesion.tracking import configure_tracking

    params = load_params(params_file)
    settings = params.serve
    configure_tracking(params.train.mlflow_experiment)
    run_server(
        model or settings.model,
        host or settings.host,
        port or settings.port,
        workers or settings.workers,
        settings.follow_seconds if follow is None else follow,
        int(settings.max_body_mb * (1 << 20)),
    )


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

    from skinlesion.tracking import configure_tracking
    from skinlesion.upgrade import upgrade_model as upgrade

    configure_tracking(load_params(params_file).train.mlflow_experiment)
    done = upgrade(mlflow.MlflowClient(), model)
    moved = f"; moved {', '.join(done.aliases)}" if done.aliases else ""
    typer.echo(f"{done.name} version {done.old_version} -> version {done.new_version}{moved}")


@infra_app.command("bootstrap-buckets")
@user_errors
def infra_bootstrap_buckets(
    buckets: Annotated[
        list[str] | None,
        typer.Option(
            "--bucket", help="Bucket(s) to create and check (default: params infra.buckets)."
        ),
    ] = None,
    endpoint_url: Annotated[
        str | None, typer.Option(help="S3 endpoint (default: $AWS_ENDPOINT_URL, else AWS).")
    ] = None,
    region: Annotated[
        str | None, typer.Option(help="Region (default: $AWS_DEFAULT_REGION or us-east-1).")
    ] = None,
    params_file: ParamsOpt = None,
) -> None:
    """Create the DVC-remote and MLflow-artifact buckets if missing and check read/write."""
    from skinlesion.storage import bootstrap_buckets

    names = buckets or list(load_params(params_file).infra.buckets)
    for status in bootstrap_buckets(names, endpoint_url, region):
        state = "created" if status.created else "exists"
        access = "read/write ok" if status.read_write else "read/write FAILED"
        typer.echo(f"{status.bucket}: {state}, {access}")


def command_line() -> typer.Typer:
    """The command line with every installed command group (entry points of
    ``skinlesion.commands``); adding them twice is a no-op."""
    from importlib.metadata import entry_points

    present = {group.name for group in app.registered_groups}
    for plugin in entry_points(group=PLUGIN_GROUP):
        if plugin.name not in present:
            app.add_typer(plugin.load(), name=plugin.name)
    return app


def run() -> None:
    """The `skinlesion` console script."""
    command_line()()


if __name__ == "__main__":
    run()
