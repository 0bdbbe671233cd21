"""The `skinlesion` command line: one command per step of the flow.

DVC stages and KFP components call these same commands / functions, so there is one
implementation per step. Heavy libraries (TensorFlow, GX) are imported inside commands,
so that `--help` stays fast.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from skinlesion.params import load_params

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


def _data_dir(data_dir: Path | None, params: dict) -> Path:
    return data_dir or Path(params["data"]["raw_dir"])


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


@app.command()
def validate(
    report_dir: Annotated[
        Path, typer.Option("--report-dir", help="Where Data Docs and validation.json go.")
    ],
    data_dir: DataDirOpt = None,
    params_file: ParamsOpt = None,
) -> None:
    """Validate a HAM10000 folder with Great Expectations; non-zero exit when invalid."""
    from skinlesion.dataset import DatasetLayoutError
    from skinlesion.validation import ValidationSettings, validate_dataset

    params = load_params(params_file)
    root = _data_dir(data_dir, params)
    try:
        report = validate_dataset(root, report_dir, ValidationSettings.from_params(params))
    except DatasetLayoutError as err:
        raise _fail(str(err)) from err
    if not report.success:
        raise _fail(report.describe())
    typer.echo(report.describe())


@app.command()
def split(
    out: Annotated[Path, typer.Option("--out", help="Manifest CSV to write.")],
    summary: Annotated[Path | None, typer.Option(help="JSON counts per split and class.")] = None,
    data_dir: DataDirOpt = None,
    params_file: ParamsOpt = None,
) -> None:
    """Lesion-grouped, stratified train/val/test split; fails on any leakage."""
    from skinlesion.leakage import LeakageError
    from skinlesion.split import SplitSettings, split_dataset, split_summary, write_manifest

    params = load_params(params_file)
    try:
        manifest = split_dataset(_data_dir(data_dir, params), SplitSettings.from_params(params))
    except LeakageError as err:
        raise _fail(str(err)) from err
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
def check_leakage(
    manifest: Annotated[
        list[Path], typer.Argument(help="Manifest CSV(s); several are checked together.")
    ],
) -> None:
    """Fail when a lesion or identical image content appears in more than one split."""
    import pandas as pd

    from skinlesion.leakage import LeakageError, assert_no_leakage
    from skinlesion.split import read_manifest

    frame = pd.concat([read_manifest(m) for m in manifest], ignore_index=True)
    try:
        assert_no_leakage(frame)
    except LeakageError as err:
        raise _fail(str(err)) from err
    typer.echo(f"no leakage across {len(frame)} rows")


@app.command()
def eda(
    manifest: Annotated[Path, typer.Option("--manifest", help="Split manifest CSV.")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Folder for plots and summary.md.")],
    data_dir: DataDirOpt = None,
    params_file: ParamsOpt = None,
) -> None:
    """Exploratory data analysis: class balance, demographics, samples per class."""
    from skinlesion.eda import EdaSettings, run_eda
    from skinlesion.split import read_manifest

    params = load_params(params_file)
    files = run_eda(
        read_manifest(manifest),
        _data_dir(data_dir, params),
        out_dir,
        EdaSettings.from_params(params),
    )
    typer.echo(f"wrote {len(files)} files to {out_dir}")


if __name__ == "__main__":
    app()
