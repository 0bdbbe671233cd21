"""The base of every error that a user can fix (bad data, bad input, missing files).

The CLI turns these into one red message and exit code 1, without a traceback; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SkinlesionError(Exception):
    """An error with a message that says what to do."""
