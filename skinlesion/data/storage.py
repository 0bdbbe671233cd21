"""S3 buckets for the DVC remote and MLflow artifacts (create them, prove access) and the
fetch of raw data into a Kubeflow run.

`skinlesion infra bootstrap-buckets` is run once per environment (dev MinIO/SeaweedFS,
prod AWS S3). The endpoint and credentials come from the environment (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, ... or a profile), never from the repository.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skinlesion.errors import SkinlesionError
from skinlesion.progress import progress

PROBE_KEY = ".skinlesion-access-check"


class StorageError(SkinlesionError, RuntimeError):
    """A bucket cannot be reached, created or used; the message says what to fix."""


@dataclass(frozen=True)
class BucketStatus:
    bucket: str
    created: bool  # False: it existed already
    read_write: bool


def s3_client(endpoint_url: str | None = None, region: str | None = None) -> Any:
    """A boto3 S3 client; the endpoint defaults to $AWS_ENDPOINT_URL (MinIO, SeaweedFS)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None,
        region_name=region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    )


def _explain(err: Exception, bucket: str, client: Any) -> StorageError:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    endpoint = client.meta.endpoint_url
    if isinstance(err, NoCredentialsError):
        return StorageError(
            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
            "AWS_PROFILE); on the cluster they come from the Kubernetes Secret"
        )
    if isinstance(err, EndpointConnectionError):
        return StorageError(f"cannot reach the S3 endpoint {endpoint}: check AWS_ENDPOINT_URL")
    if isinstance(err, ClientError):
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(
                f"access to bucket {bucket} at {endpoint} denied ({code}): the credentials "
                "need s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on it"
            )
        return StorageError(f"bucket {bucket} at {endpoint}: {code or err}")
    return StorageError(f"bucket {bucket} at {endpoint}: {err}")


def ensure_bucket(client: Any, bucket: str) -> BucketStatus:
    """Create ``bucket`` if missing, then write, read and delete a probe object."""
    from botocore.exceptions import BotoCoreError, ClientError

    created = False
    try:
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
            region = client.meta.region_name
            extra = (
                {}
                if region == "us-east-1"
                else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            )
            client.create_bucket(Bucket=bucket, **extra)
            created = True
        client.put_object(Bucket=bucket, Key=PROBE_KEY, Body=b"ok")
        body = client.get_object(Bucket=bucket, Key=PROBE_KEY)["Body"].read()
        client.delete_object(Bucket=bucket, Key=PROBE_KEY)
    except (BotoCoreError, ClientError) as err:
        raise _explain(err, bucket, client) from err
    return BucketStatus(bucket, created, body == b"ok")


def bootstrap_buckets(
    buckets: list[str], endpoint_url: str | None = None, region: str | None = None
) -> list[BucketStatus]:
    """Every bucket created if needed and checked for read/write access."""
    client = s3_client(endpoint_url, region)
    return [ensure_bucket(client, b) for b in buckets]


def fetch_dataset(source: str, dest: str | Path, endpoint_url: str | None = None) -> int:
    """Copy a HAM10000 folder to ``dest``: from ``s3://bucket/prefix`` (boto3) or from a
    local folder (e.g. a mounted PVC). Returns the number of files copied.

    This is how a Kubeflow run gets its raw data; locally, DVC points at the folder."""
    target = Path(dest)
    target.mkdir(parents=True, exist_ok=True)
    if source.startswith("s3://"):
        return _download_prefix(source, target, endpoint_url)
    folder = Path(source.removeprefix("file://"))
    if not folder.is_dir():
        raise StorageError(f"data source {source} is not a folder (nor an s3:// URI)")
    files = [p for p in folder.rglob("*") if p.is_file()]
    for path in progress(files, total=len(files), desc=f"copy {folder.name}"):
        out = target / path.relative_to(folder)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out)
    return len(files)


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``bucket``, ``a/b/``); the prefix ends with a slash."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix.rstrip("/") + "/" if prefix else ""


def _keys(client: Any, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", []) if o["Key"][-1] != "/"]


def _download_prefix(uri: str, target: Path, endpoint_url: str | None) -> int:
    count = mirror_from_s3(uri, target, endpoint_url)
    if not count:
        raise StorageError(f"no objects under {uri}: upload HAM10000 there first")
    return count


def mirror_to_s3(folder: str | Path, uri: str) -> int:
    """Make ``uri`` hold exactly the files of ``folder``: upload each, delete the rest.
    Returns the number of files uploaded."""
    from botocore.exceptions import BotoCoreError, ClientError

    root = Path(folder)
    bucket, prefix = split_uri(uri)
    client = s3_client()
    files = {prefix + p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
    try:
        for key, path in files.items():
            client.upload_file(str(path), bucket, key)
        stale = [k for k in _keys(client, bucket, prefix) if k not in files]
        for key in stale:
            client.delete_object(Bucket=bucket, Key=key)
    except (BotoCoreError, ClientError) as err:
        raise _explain(err, bucket, client) from err
    return len(files)


def mirror_from_s3(uri: str, folder: str | Path, endpoint_url: str | None = None) -> int:
    """Download every object under ``uri`` into ``folder`` (none is not an error), with
    progress. Returns the number of files downloaded."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_uri(uri)
    client = s3_client(endpoint_url)
    try:
        keys = _keys(client, bucket, prefix)
        for key in progress(keys, total=len(keys), desc=f"download {uri}"):
            out = Path(folder) / key[len(prefix) :]
            out.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(out))
    except (BotoCoreError, ClientError) as err:
        raise _explain(err, bucket, client) from err
    return len(keys)


def delete_prefix(uri: str) -> None:
    """Remove every object under ``uri``."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_uri(uri)
    client = s3_client()
    try:
        for key in _keys(client, bucket, prefix):
            client.delete_object(Bucket=bucket, Key=key)
    except (BotoCoreError, ClientError) as err:
        raise _explain(err, bucket, client) from err
