"""Who may see the review page: HTTP basic auth against the reviewers of
``SKINLESION_REVIEWERS``, locally and on the cluster alike (there from a Secret, behind
the ingress's TLS).

Basic auth rather than an OIDC proxy header: the same code and test on a laptop and on the
cluster, no identity provider to stand up, and no header that anything able to reach the
pod could forge. Every request needs it: nothing of the page, its images or its answers
is served to an anonymous one (401 with a ``WWW-Authenticate`` challenge).

A password may be given as itself or as its PBKDF2 hash (``pbkdf2_sha256$…``, what
`skinlesion review hash-password` prints), so that whoever reads the Secret does not read
the passwords. A hash is checked once per sign-in header and the outcome kept, so that
the page's many requests (each thumbnail is one) do not pay for it again.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import secrets

from skinlesion.errors import SkinlesionError

ENV_REVIEWERS = "SKINLESION_REVIEWERS"  # name:password entries, comma- or newline-separated
HASHED = "pbkdf2_sha256"
ITERATIONS = 600_000  # OWASP's figure for PBKDF2-HMAC-SHA256


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


def hash_password(password: str, iterations: int = ITERATIONS) -> str:
    """``pbkdf2_sha256$<iterations>$<salt>$<hash>`` of ``password`` (a new random salt)."""
    salt = secrets.token_urlsafe(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"{HASHED}${iterations}${salt}${base64.b64encode(digest).decode()}"


@functools.lru_cache(maxsize=256)
def _matches(password: str, expected: str) -> bool:
    """Whether ``password`` is ``expected``: itself, or the password of its hash (constant
    time either way; each pair is worked out once)."""
    if not expected.startswith(f"{HASHED}$"):
        return hmac.compare_digest(password.encode(), expected.encode())
    try:
        _, iterations, salt, digest = expected.split("$")
        wanted = base64.b64decode(digest)
        rounds = int(iterations)
    except ValueError:  # a malformed entry signs no one in
        return False
    given = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), rounds)
    return hmac.compare_digest(given, wanted)


def signed_in(header: str | None, reviewers: dict[str, str]) -> str | None:
    """The reviewer an ``Authorization: Basic …`` header signs in, else None."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        name, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    expected = reviewers.get(name)
    if expected is None or not _matches(password, expected):
        return None
    return name
