"""`python -m skinlesion` is the same as the `skinlesion` command."""

from skinlesion.cli import run

run()
