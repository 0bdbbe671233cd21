"""`skinlesion data`: getting HAM10000 (download, synthetic stand-in), naming its version,
publishing it and comparing two versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from skinlesion.cli.options import DataDirOpt, ParamsOpt, data_dir_of, fail, user_errors
from skinlesion.config.files import load_params

app = typer.Typer(
    help="Get HAM10000: the official download or a synthetic stand-in; versions.",
    no_args_is_help=True,
)


@app.command("download")
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
    from skinlesion.data.download import REQUIRED_PREFIXES, DownloadError, download_ham10000

    try:
        root = download_ham10000(dest, server, doi, None if all_files else REQUIRED_PREFIXES)
    except DownloadError as err:
        raise fail(f"download failed: {err}") from err
    typer.echo(f"HAM10000 ready in {root}")


@app.command("synth")
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
    from skinlesion.data.synth import make_synthetic_dataset

    if layout not in ("single", "official"):
        raise fail("--layout must be 'single' or 'official'", 2)
    frame = make_synthetic_dataset(out, n, seed, layout=layout)  # type: ignore[arg-type]
    typer.echo(
        f"synthetic dataset: {len(frame)} images of {frame['lesion_id'].nunique()} lesions in {out}"
    )


@app.command("version")
@user_errors
def data_version_command(
    location: Annotated[str, typer.Argument(help="A HAM10000 folder or s3://bucket/prefix.")] = "",
    params_file: ParamsOpt = None,
) -> None:
    """Print the data version of a folder or S3 prefix (default: params data.raw_dir): the
    version MLflow runs, registered models and pinned pipeline runs name."""
    from skinlesion.data.versions import data_version

    params = load_params(params_file)
    typer.echo(data_version(location or params.data.raw_dir, params.data.workers))


@app.command("publish")
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
    from skinlesion.data.publish import publish

    params = load_params(params_file)
    target = publish(data_dir_of(data_dir, params), to, params.validate_, params.data.workers)
    version = target.rsplit("/", 1)[1]
    typer.echo(f"published version {version} at {target}")
    typer.echo(
        f"pin it: skinlesion pipeline submit --param data_uri={target} "
        f"--param data_version={version}"
    )


@app.command("diff")
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

    from skinlesion.data.versions import diff_locations

    diff = diff_locations(old, new, load_params(params_file).data.workers)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(asdict(diff), indent=2) + "\n")
    typer.echo(diff.describe())


@app.command("add-labels")
@user_errors
def data_add_labels(
    feedback: Annotated[
        Path, typer.Argument(help="CSV of confirmed diagnoses: dx, dx_type and the image.")
    ],
    to: Annotated[Path, typer.Option("--to", help="The HAM10000 folder to add them to.")],
    log: Annotated[
        str | None,
        typer.Option(
            help="The prediction log (a folder or s3:// prefix), to find images by request "
            "or digest."
        ),
    ] = None,
    allow_relabel: Annotated[
        bool, typer.Option(help="Change the diagnosis of an image already in the data.")
    ] = False,
    params_file: ParamsOpt = None,
) -> None:
    """Add confirmed diagnoses of new lesions to the data, validated by the same suite:
    a new data version (then `skinlesion data publish` it for the cluster)."""
    from skinlesion.data.feedback import add_labels
    from skinlesion.serving.prediction_log import read_records

    params = load_params(params_file)
    records = read_records(log) if log else None
    result = add_labels(feedback, to, params.validate_, params.data.workers, records, allow_relabel)
    typer.echo(result.describe())
    for image_id in result.relabelled:
        typer.echo(f"relabelled: {image_id}")
