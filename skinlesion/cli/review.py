"""Referred answers to a dermatologist and back into the data: `review serve`, the page of
the review queue, and `review export`, its confirmed diagnoses as a new data version."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from skinlesion.cli.options import ParamsOpt, fail, track, user_errors
from skinlesion.config.files import load_params

if TYPE_CHECKING:
    from skinlesion.config.params import Params

app = typer.Typer(
    help="The review queue of referred images: `serve` the page, `export` its answers.",
    no_args_is_help=True,
)

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="SKINLESION_REVIEW_STORE",
        help="Review store, a SQLAlchemy URL: sqlite:///reviews.db, postgresql://… "
        "(default: review.store).",
    ),
]
LogOpt = Annotated[
    str | None,
    typer.Option(
        "--log",
        envvar="SKINLESION_SERVE_LOG_URI",
        help="Prediction log: a folder or s3:// prefix (default: review.log_uri, else "
        "serve.log_uri).",
    ),
]


def _log_uri(log: str | None, params: Params) -> str:
    uri = log or params.review.log_uri or params.serve.log_uri
    if not uri:
        raise fail("no prediction log: give --log or set review.log_uri (or serve.log_uri)")
    return uri


@app.command("serve")
@user_errors
def serve(
    store: StoreOpt = None,
    log: LogOpt = None,
    host: Annotated[str | None, typer.Option(help="Address (default: review.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: review.port).")] = None,
    params_file: ParamsOpt = None,
) -> None:
    """Serve the review page: the referred images of the last review.window_days days that
    no one has answered, most informative first; reviewers sign in with the name:password
    entries of $SKINLESION_REVIEWERS (basic auth)."""
    import uvicorn

    from skinlesion.model.loading import load_model
    from skinlesion.review.app import ReviewSource, create_review_app
    from skinlesion.review.auth import reviewers_from_env
    from skinlesion.review.store import ReviewStore

    params = load_params(params_file)
    reviewers = reviewers_from_env()  # none: a clear error before anything listens
    track(params)  # the registry of the logged versions (Grad-CAM, distances)
    settings = params.review
    source = ReviewSource(_log_uri(log, params), settings.window_days, load_model)
    app_ = create_review_app(
        ReviewStore(store or settings.store), source, reviewers, params.serve.log_retention_days
    )
    uvicorn.run(app_, host=host or settings.host, port=port or settings.port, log_level="info")


@app.command("export")
@user_errors
def export(
    to: Annotated[Path, typer.Option("--to", help="The HAM10000 folder to add them to.")],
    store: StoreOpt = None,
    log: LogOpt = None,
    feedback: Annotated[
        Path | None,
        typer.Option(help="Also keep the feedback file given to `data add-labels` here."),
    ] = None,
    params_file: ParamsOpt = None,
) -> None:
    """Add the agreed diagnoses of the review store to the data through `data add-labels`
    (new lesions, the same validation): a new data version, which the next scheduled run
    reports as changed. "Not a lesion" answers stay monitoring evidence; images whose
    reviewers disagree wait for a consensus review."""
    from skinlesion.review.export import export_reviews
    from skinlesion.review.store import ReviewStore
    from skinlesion.serving.prediction_log import read_records

    params = load_params(params_file)
    exported = export_reviews(
        ReviewStore(store or params.review.store),
        read_records(_log_uri(log, params)),
        to,
        params.validate_,
        params.data.workers,
        feedback,
    )
    typer.echo(exported.describe())


@app.command("hash-password")
def hash_password_command(
    name: Annotated[str, typer.Argument(help="The reviewer's name.")],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
) -> None:
    """Print a SKINLESION_REVIEWERS entry for NAME with the password's PBKDF2 hash in place
    of the password: the Secret then holds no password."""
    from skinlesion.review.auth import hash_password

    if ":" in name or "," in name:
        raise fail("a reviewer's name holds neither ':' nor ','")
    typer.echo(f"{name}:{hash_password(password)}")
