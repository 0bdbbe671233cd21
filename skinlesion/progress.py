"""Progress bars for long work, quiet when output is not a terminal or in CI logs."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    """Wrap an iterable in a tqdm bar on stderr; SKINLESION_PROGRESS=0 turns it off."""
    enabled = os.environ.get("SKINLESION_PROGRESS", "1") != "0"
    yield from tqdm(
        items,
        total=total,
        desc=desc,
        disable=not enabled,
        file=sys.stderr,
        mininterval=1.0,
        unit="it",
    )
