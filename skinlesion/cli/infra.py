"""`skinlesion infra`: cluster infrastructure helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skinlesion.cli.options import ParamsOpt, user_errors
from skinlesion.config.files import load_params
from skinlesion.errors import SkinlesionError

app = typer.Typer(
    help="Cluster infrastructure helpers (S3 buckets, image pins).", no_args_is_help=True
)


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


KUSTOMIZATIONS = [Path(f"infra/k8s/overlays/{name}/kustomization.yaml") for name in ("dev", "prod")]
MANIFEST_IMAGE = "ghcr.io/skinlesion/skinlesion"  # the step image's name in the manifests
SERVE_IMAGE = "ghcr.io/skinlesion/skinlesion-serve"  # the serving image's


def pin_image(kustomization: Path, reference: str, name: str = MANIFEST_IMAGE) -> str:
    """Point the manifests' ``name`` image at ``reference`` (``repository@sha256:...``)
    through the kustomization's ``images`` block, which ends the file: kustomize then
    renders every container of that image by digest. The other images' entries stay.
    Returns the block written."""
    import yaml

    repository, _, digest = reference.partition("@")
    if not digest.startswith("sha256:") or len(digest) != len("sha256:") + 64:
        raise SkinlesionError(f"{reference!r} is not pinned by digest: give repository@sha256:…")
    text = kustomization.read_text()
    head, marker, tail = text.partition("\nimages:\n")
    if not marker:
        raise SkinlesionError(f"{kustomization} has no final `images:` block to pin")
    others = [e for e in yaml.safe_load(marker + tail)["images"] if e["name"] != name]
    entry = [*others, {"name": name, "newName": repository, "digest": digest}]
    block = yaml.safe_dump({"images": entry}, sort_keys=False)
    kustomization.write_text(f"{head}\n{block}")
    return block


@app.command("pin-image")
@user_errors
def infra_pin_image(
    reference: Annotated[str, typer.Argument(help="The pushed image: repository@sha256:…")],
    kustomizations: Annotated[
        list[Path] | None,
        typer.Option(
            "--kustomization", help="Kustomization(s) to rewrite (default: both overlays)."
        ),
    ] = None,
    name: Annotated[
        str,
        typer.Option(help=f"The image name the manifests use (the serving image: {SERVE_IMAGE})."),
    ] = MANIFEST_IMAGE,
) -> None:
    """Pin the manifests' step (or serving) image by digest (`make images` runs this after
    the push)."""
    for kustomization in kustomizations or KUSTOMIZATIONS:
        typer.echo(f"{kustomization}:\n{pin_image(kustomization, reference, name)}", nl=False)
