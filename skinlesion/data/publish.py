"""Moving a data version between places: publishing a validated folder to S3 under its
version, and fetching data into a run at the version the run pins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skinlesion.data.catalog import DatasetLayoutError
from skinlesion.data.versions import list_folder, list_s3, listing_of
from skinlesion.errors import SkinlesionError


class DataVersionError(SkinlesionError, ValueError):
    """The data at a location is not the version a run pinned."""


def fetch_version(source: str, dest: str | Path, pinned: str, workers: int = 8) -> str:
    """Copy the HAM10000 data at ``source`` to ``dest`` and return its version. With
    ``pinned`` (a version), refuse before copying anything when ``source`` holds other data,
    and check the copy again after it (so a prefix changed mid-download is caught too)."""
    from skinlesion.data.storage import fetch_dataset

    found = listing_of(source, workers).version
    if pinned and found != pinned:
        raise DataVersionError(
            f"{source} holds data version {found[:12]}, but this run pins {pinned[:12]}: "
            "point data_uri at the published copy of the pinned version "
            "(`skinlesion data publish` prints it), or pin the version that is there"
        )
    fetch_dataset(source, dest)
    copied = list_folder(Path(dest), workers).version
    if copied != found:
        raise DataVersionError(
            f"{source} changed while it was copied ({found[:12]} -> {copied[:12]}); run again"
        )
    return copied


def publish(folder: str | Path, base_uri: str, settings: Any, workers: int) -> str:
    """Validate ``folder`` and upload it to ``<base_uri>/<version>/``, an immutable prefix
    per version (uploading a version that is there already is a no-op). Returns the URI
    that a run pins. ``settings`` is the ``validate`` section: invalid data is refused
    before anything is uploaded."""
    import tempfile

    from skinlesion.data.storage import mirror_to_s3
    from skinlesion.data.validation import validate_dataset

    if not base_uri.startswith("s3://"):
        raise DataVersionError(f"publish to an s3:// prefix, not {base_uri!r}")
    with tempfile.TemporaryDirectory() as reports:
        validate_dataset(folder, reports, settings, workers).require_valid()
    version = list_folder(Path(folder), workers).version
    target = f"{base_uri.rstrip('/')}/{version}"
    try:
        there = list_s3(target).version
    except DatasetLayoutError:
        there = ""
    if there != version:
        mirror_to_s3(folder, target)
        if list_s3(target).version != version:
            raise DataVersionError(f"the upload to {target} does not hold version {version}")
    return target
