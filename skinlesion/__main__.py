"""`python -m skinlesion` is the same as the `skinlesion` command."""

from skinlesion.cli.main import run

run()
