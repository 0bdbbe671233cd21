"""The data steps of the flow: validate, split (and its leakage check), EDA, oversample."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from skinlesion.cli.options import DataDirOpt, ParamsOpt, data_dir_of, fail, user_errors
from skinlesion.config.files import load_params

app = typer.Typer()


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
    from skinlesion.data.validation import validate_dataset

    params = load_params(params_file)
    root = data_dir_of(data_dir, params)
    report = validate_dataset(root, report_dir, params.validate_, params.data.workers)
    if not report.success:
        raise fail(report.describe())
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
    from skinlesion.data.split import split_dataset, split_summary, write_manifest

    params = load_params(params_file)
    manifest = split_dataset(data_dir_of(data_dir, params), params.split, params.data.workers)
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

    from skinlesion.data.leakage import assert_no_leakage
    from skinlesion.data.split import read_manifest

    frame = pd.concat([read_manifest(m) for m in manifest], ignore_index=True)
    assert_no_leakage(frame)
    typer.echo(f"no leakage across {len(frame)} rows")


@app.command()
@user_errors
def eda(
    manifest: Annotated[Path, typer.Option("--manifest", help="Split manifest CSV.")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Folder for plots and summary.md.")],
    data_dir: DataDirOpt = None,
    params_file: ParamsOpt = None,
) -> None:
    """Exploratory data analysis: class balance, demographics, samples per class."""
    from skinlesion.data.eda import run_eda
    from skinlesion.data.split import read_manifest

    params = load_params(params_file)
    files = run_eda(
        read_manifest(manifest),
        data_dir_of(data_dir, params),
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
    from skinlesion.data.oversample import oversample_manifest
    from skinlesion.data.split import read_manifest

    params = load_params(params_file)
    result = oversample_manifest(read_manifest(manifest), params.oversample)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(out, index=False)
    counts = result[result["split"] == "train"]["dx"].value_counts().sort_index()
    typer.echo(f"training rows per class after oversampling: {counts.to_dict()}")
