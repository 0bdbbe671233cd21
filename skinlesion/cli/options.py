"""What every command group shares: the ``--params`` and ``--data-dir`` options, turning
errors a user can fix into a message and exit code 1, and tracking set up from params."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from skinlesion.errors import SkinlesionError

if TYPE_CHECKING:
    from skinlesion.config.params import Params

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


def data_dir_of(data_dir: Path | None, params: Params) -> Path:
    """The ``--data-dir`` given, else params ``data.raw_dir``."""
    return data_dir or Path(params.data.raw_dir)


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Errors a user can fix end the command with their message and exit code 1."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SkinlesionError as err:
            raise fail(str(err)) from err

    return run


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` in red on stderr; the exit to raise with ``code``."""
    typer.secho(message, err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def track(params: Params) -> None:
    """Point MLflow at the tracking server and experiment of params ``tracking``."""
    from skinlesion.tracking import configure_tracking

    configure_tracking(params.tracking.experiment)
