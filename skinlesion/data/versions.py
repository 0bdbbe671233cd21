"""One data version for a HAM10000 folder or S3 prefix, and what changed between two.

A version is a SHA-256 over the MD5 of the metadata file and of every image, keyed by
image id, so it depends on what the data holds and not on where it lives or in which
layout: a folder, its DVC-tracked copy and its upload to S3 give the same version. MD5
because it is what both sides already record: S3 returns it as the ETag of every object
uploaded in one part (HAM10000's images and metadata are far below the multipart size), so
a prefix is versioned from a listing, without downloading it; DVC records the same MD5
per file in its cache.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from skinlesion.data.catalog import (
    IMAGE_DIRS,
    IMAGE_SUFFIXES,
    METADATA_NAMES,
    DatasetLayoutError,
    find_metadata,
    index_images,
    read_metadata,
)
from skinlesion.progress import progress


@dataclass(frozen=True)
class Listing:
    """What a HAM10000 folder or prefix holds: MD5 of the metadata file and of each image."""

    location: str
    metadata_md5: str
    images: dict[str, str]  # image_id -> MD5
    metadata_key: str = ""  # where the metadata file is (relative path or S3 key)

    def record(self) -> dict[str, Any]:
        """As logged with a training run (``data/listing.json``)."""
        return {
            "version": self.version,
            "location": self.location,
            "metadata_key": self.metadata_key,
            "metadata_md5": self.metadata_md5,
            "images": dict(sorted(self.images.items())),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Listing:
        return cls(
            str(record["location"]),
            str(record["metadata_md5"]),
            dict(record["images"]),
            str(record.get("metadata_key", "")),
        )

    @property
    def version(self) -> str:
        digest = hashlib.sha256(f"metadata {self.metadata_md5}\n".encode())
        for image_id, md5 in sorted(self.images.items()):
            digest.update(f"{image_id} {md5}\n".encode())
        return digest.hexdigest()


def file_md5(path: str | Path) -> str:
    """A file's MD5, as DVC and S3 (single-part ETag) record it, read in blocks."""
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_folder(root: str | Path, workers: int) -> Listing:
    """The listing of a local HAM10000 folder (files read in parallel, with progress)."""
    folder = Path(root)
    metadata = find_metadata(folder)
    images = sorted(index_images(folder).items())

    def md5(item: tuple[str, Path]) -> str:
        return file_md5(folder / item[1])

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        digests = list(
            progress(pool.map(md5, images), total=len(images), desc=f"hashing {folder.name}")
        )
    return Listing(
        str(folder),
        file_md5(metadata),
        {image_id: d for (image_id, _), d in zip(images, digests, strict=True)},
        metadata.name,
    )


def list_s3(uri: str, client: Any | None = None) -> Listing:
    """The listing of an S3 prefix in a HAM10000 layout, from ETags (an object uploaded in
    several parts has no MD5 ETag and is downloaded and hashed instead)."""
    from skinlesion.data.storage import s3_client, split_uri

    client = client or s3_client()
    bucket, prefix = split_uri(uri)
    objects = _objects(client, bucket, prefix)
    metadata = next(
        (objects[prefix + name] for name in METADATA_NAMES if prefix + name in objects), None
    )
    if metadata is None:
        raise DatasetLayoutError(
            f"no HAM10000 metadata under {uri}: expected one of {', '.join(METADATA_NAMES)}"
        )
    images: dict[str, str] = {}
    relative = {PurePosixPath(key[len(prefix) :]): obj for key, obj in objects.items()}
    for folder in IMAGE_DIRS:  # in index_images' order, so a duplicate id resolves alike
        for rel, obj in sorted(relative.items()):
            if rel.parent.as_posix() == folder and rel.suffix.lower() in IMAGE_SUFFIXES:
                images.setdefault(rel.stem, _md5_of(client, bucket, obj))
    return Listing(uri, _md5_of(client, bucket, metadata), images, metadata["Key"])


def listing_of(location: str, workers: int = 8) -> Listing:
    """A folder or an ``s3://`` prefix."""
    if location.startswith("s3://"):
        return list_s3(location)
    return list_folder(Path(location.removeprefix("file://")), workers)


def data_version(location: str | Path, workers: int = 8) -> str:
    """The version of the HAM10000 data at ``location`` (folder or ``s3://`` prefix)."""
    return listing_of(str(location), workers).version


def read_metadata_at(listing: Listing) -> pd.DataFrame:
    """The metadata rows of a listed folder or prefix (the one file a diff downloads)."""
    if not listing.location.startswith("s3://"):
        return read_metadata(Path(listing.location) / listing.metadata_key)
    import tempfile

    from skinlesion.data.storage import s3_client, split_uri

    bucket, _ = split_uri(listing.location)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / PurePosixPath(listing.metadata_key).name
        s3_client().download_file(bucket, listing.metadata_key, str(local))
        return read_metadata(local)


@dataclass
class DataDiff:
    """What changed from ``old`` to ``new``, in rows of the metadata (labelled images, what
    a split and a training read), lesions and images per class; image files that no row
    names are counted apart, since no step reads them."""

    old_version: str
    new_version: str
    rows_added: list[str] = field(default_factory=list)  # image ids
    rows_removed: list[str] = field(default_factory=list)
    rows_changed: list[str] = field(default_factory=list)  # same id: other bytes or row
    unlabelled_added: list[str] = field(default_factory=list)  # files no row names
    unlabelled_removed: list[str] = field(default_factory=list)
    lesions_added: int = 0
    lesions_removed: int = 0
    metadata_changed: bool = False
    classes: dict[str, tuple[int, int]] = field(default_factory=dict)  # dx -> (old, new)

    @property
    def same(self) -> bool:
        return self.old_version == self.new_version

    def describe(self, limit: int = 5) -> str:
        if self.same:
            return f"same data: version {self.new_version[:12]}"
        lines = [
            f"data {self.old_version[:12]} -> {self.new_version[:12]}: "
            f"{len(self.rows_added)} labelled images added, {len(self.rows_removed)} removed, "
            f"{len(self.rows_changed)} changed; {self.lesions_added} lesions added, "
            f"{self.lesions_removed} removed; metadata "
            f"{'changed' if self.metadata_changed else 'unchanged'}"
        ]
        if self.unlabelled_added or self.unlabelled_removed:
            lines.append(
                f"  image files without a metadata row: {len(self.unlabelled_added)} added, "
                f"{len(self.unlabelled_removed)} removed (no step reads them)"
            )
        for name, ids in (
            ("added", self.rows_added),
            ("removed", self.rows_removed),
            ("changed", self.rows_changed),
        ):
            if ids:
                more = f" (+{len(ids) - limit} more)" if len(ids) > limit else ""
                lines.append(f"  {name}: {', '.join(ids[:limit])}{more}")
        lines.append("  labelled images per class (old -> new):")
        for dx, (old, new) in sorted(self.classes.items()):
            mark = f" ({new - old:+d})" if new != old else ""
            lines.append(f"    {dx:6s} {old:6d} -> {new:6d}{mark}")
        return "\n".join(lines)


def _rows_by_image(rows: pd.DataFrame) -> dict[str, tuple[str, ...]]:
    """Each labelled image id -> its metadata row as text (to tell a relabel)."""
    if "image_id" not in rows:
        return {}
    frame = rows.astype(str)
    return {
        row[0]: tuple(row)
        for row in frame[["image_id", *frame.columns.drop("image_id")]].itertuples(index=False)
    }


def diff_listings(
    old: Listing, new: Listing, old_rows: pd.DataFrame, new_rows: pd.DataFrame
) -> DataDiff:
    """Compare two listings and their metadata rows."""
    old_labelled, new_labelled = _rows_by_image(old_rows), _rows_by_image(new_rows)
    before, after = set(old_labelled), set(new_labelled)
    old_lesions = set(old_rows.get("lesion_id", pd.Series(dtype=str)).dropna().astype(str))
    new_lesions = set(new_rows.get("lesion_id", pd.Series(dtype=str)).dropna().astype(str))
    old_counts = old_rows["dx"].value_counts() if "dx" in old_rows else pd.Series(dtype=int)
    new_counts = new_rows["dx"].value_counts() if "dx" in new_rows else pd.Series(dtype=int)
    old_files, new_files = set(old.images) - before, set(new.images) - after
    return DataDiff(
        old_version=old.version,
        new_version=new.version,
        rows_added=sorted(after - before),
        rows_removed=sorted(before - after),
        rows_changed=sorted(
            i
            for i in before & after
            if old.images.get(i) != new.images.get(i) or old_labelled[i] != new_labelled[i]
        ),
        unlabelled_added=sorted(new_files - old_files),
        unlabelled_removed=sorted(old_files - new_files),
        lesions_added=len(new_lesions - old_lesions),
        lesions_removed=len(old_lesions - new_lesions),
        metadata_changed=old.metadata_md5 != new.metadata_md5,
        classes={
            str(dx): (int(old_counts.get(dx, 0)), int(new_counts.get(dx, 0)))
            for dx in set(old_counts.index) | set(new_counts.index)
        },
    )


def diff_locations(old: str, new: str, workers: int = 8) -> DataDiff:
    """``skinlesion data diff OLD NEW``: two folders or prefixes."""
    before, after = listing_of(old, workers), listing_of(new, workers)
    return diff_listings(before, after, read_metadata_at(before), read_metadata_at(after))


def _objects(client: Any, bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o for page in pages for o in page.get("Contents", [])}


def _md5_of(client: Any, bucket: str, obj: dict[str, Any]) -> str:
    etag = str(obj.get("ETag", "")).strip('"')
    if etag and "-" not in etag:
        return etag
    body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


DATA_ARTIFACTS = "data"  # the run's artifact folder: listing.json and the metadata file


def log_data_listing(listing: Listing, data_dir: str | Path) -> None:
    """Log what a training run read, so that a later run can say what changed since."""
    import mlflow

    mlflow.log_dict(listing.record(), f"{DATA_ARTIFACTS}/listing.json")
    mlflow.log_artifact(str(Path(data_dir) / listing.metadata_key), DATA_ARTIFACTS)


def diff_since_run(run_id: str, current: Listing) -> DataDiff | None:
    """What changed from the data a training run read (its logged listing and metadata)
    to ``current``; None when the run logged no listing (trained before it was logged)."""
    import json
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=DATA_ARTIFACTS, dst_path=tmp
                )
            )
        except Exception:
            return None
        record = folder / "listing.json"
        if not record.is_file():
            return None
        old = Listing.from_record(json.loads(record.read_text()))
        old_rows = read_metadata(folder / Path(old.metadata_key).name)
    return diff_listings(old, current, old_rows, read_metadata_at(current))
