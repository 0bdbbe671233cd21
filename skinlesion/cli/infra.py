"""`skinlesion infra`: cluster infrastructure helpers."""

from __future__ import annotations

from typing import Annotated

import typer

from skinlesion.cli.options import ParamsOpt, user_errors
from skinlesion.config.files import load_params

app = typer.Typer(help="Cluster infrastructure helpers (S3 buckets).", no_args_is_help=True)


@app.command("bootstrap-buckets")
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
    from skinlesion.data.storage import bootstrap_buckets

    names = buckets or list(load_params(params_file).infra.buckets)
    for status in bootstrap_buckets(names, endpoint_url, region):
        state = "created" if status.created else "exists"
        access = "read/write ok" if status.read_write else "read/write FAILED"
        typer.echo(f"{status.bucket}: {state}, {access}")
