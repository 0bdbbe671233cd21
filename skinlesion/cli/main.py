"""The ``skinlesion`` command line: one command per step of the flow, assembled from the
command groups of this package.

DVC stages and KFP components call these same commands / functions, so there is one
implementation per step. Heavy libraries (TensorFlow, GX) are imported inside commands,
so that ``--help`` stays fast. Command groups of other packages (the Kubeflow ``pipeline``
commands) come in through entry points, so the library never imports them.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from skinlesion.cli import (
    data,
    infra,
    modeling,
    monitoring,
    prepare,
    promotion,
    review,
    serving,
    tune,
)

PLUGIN_GROUP = "skinlesion.commands"


def _logging(
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


def command_line() -> typer.Typer:
    """The whole command line: the steps in flow order, the ``data`` and ``infra`` groups,
    and every installed command group (entry points of ``skinlesion.commands``)."""
    from importlib.metadata import entry_points

    app = typer.Typer(
        help="Validate, split, train, evaluate and promote HAM10000 skin-lesion classifiers "
        "on lesion-disjoint data.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    app.callback()(_logging)
    for steps in (prepare, modeling, promotion, serving, monitoring):
        app.add_typer(steps.app)
    app.add_typer(data.app, name="data")
    app.add_typer(infra.app, name="infra")
    app.add_typer(tune.app, name="tune")
    app.add_typer(review.app, name="review")
    for plugin in entry_points(group=PLUGIN_GROUP):
        try:
            group = plugin.load()
        except ModuleNotFoundError as err:
            if err.name != plugin.module.split(".")[0]:
                raise  # the group is there but breaks: say so
            continue  # its package is not installed here (the serving image has no pipelines)
        app.add_typer(group, name=plugin.name)
    return app


def run() -> None:
    """The ``skinlesion`` console script."""
    command_line()()


if __name__ == "__main__":
    run()
