"""Who may see the review page: HTTP basic auth against the reviewers of
``SKINLESION_REVIEWERS``, locally and on the cluster alike (there from a Secret, behind
the ingress's TLS).

Basic auth rather than an OIDC proxy header: the same code and test on a laptop and on the
cluster, no identity provider to stand up, and no header that anything able to reach the
pod could forge. Every request needs it: nothing of the page, its images or its answers
is served to an anonymous one (401 with a ``WWW-Authenticate`` challenge).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os

from skinlesion.errors import SkinlesionError

ENV_REVIEWERS = "SKINLESION_REVIEWERS"  # name:password entries, comma- or newline-separated


class ReviewersError(SkinlesionError, ValueError):
    """No reviewer, or an entry that is not ``name:password``."""


def reviewers_from(text: str | None) -> dict[str, str]:
    """``{name: password}`` of ``name:password`` entries separated by commas or newlines."""
    entries = [e.strip() for e in (text or "").replace("\n", ",").split(",") if e.strip()]
    if not entries:
        raise ReviewersError(
            f"no reviewers: set {ENV_REVIEWERS} to name:password entries (comma-separated); "
            "the review page serves nothing without a signed-in reviewer"
        )
    reviewers = {}
    for entry in entries:
        name, sep, password = entry.partition(":")
        if not sep or not name.strip() or not password:
            raise ReviewersError(f"{ENV_REVIEWERS}: entry {name.strip()!r}… is not name:password")
        reviewers[name.strip()] = password
    return reviewers


def reviewers_from_env() -> dict[str, str]:
    return reviewers_from(os.environ.get(ENV_REVIEWERS))


def signed_in(header: str | None, reviewers: dict[str, str]) -> str | None:
    """The reviewer an ``Authorization: Basic …`` header signs in, else None. Passwords
    are compared in constant time."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        name, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    expected = reviewers.get(name)
    if expected is None or not hmac.compare_digest(password.encode(), expected.encode()):
        return None
    return name
