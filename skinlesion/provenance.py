"""What a model was made from: code, parameters, data, image and pipeline run.

Every training run and registry version carries these as tags, so that a scheduled run
can tell whether anything changed since the champion was trained, and so that a person
can trace a version back to the exact inputs. The same functions run locally and inside
the step image, so the same inputs give the same figures in both places.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from skinlesion.dataset import content_hashes, find_metadata, index_images
from skinlesion.settings import Params

GIT_COMMIT_ENV = "SKINLESION_GIT_COMMIT"  # baked into the step image at build time
IMAGE_ENV = "SKINLESION_IMAGE"  # set on every pipeline task to the image it runs in
KFP_RUN_ENV = "SKINLESION_KFP_RUN_ID"  # set by the components from the run's placeholder
UNKNOWN = "unknown"
LESIONS_ARTIFACT = "lesions.json"  # a training run's train/val lesion ids, read by promotion

# The tags that say whether a new training could differ from the champion's.
INPUT_KEYS: tuple[str, ...] = ("data.version", "params.hash", "git_commit", "image")


def git_commit(root: str | Path = ".") -> str:
    """The code version: the image's baked-in commit, else the checkout's HEAD."""
    env_commit = os.environ.get(GIT_COMMIT_ENV)
    if env_commit:
        return env_commit
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return UNKNOWN


def params_hash(params: Params) -> str:
    """SHA-256 of the stage parameters (the ``cluster`` section, which says how tasks are
    scheduled rather than what they compute, is left out), key order ignored. A local run
    of params.yaml and a pipeline run of the same values give the same hash."""
    canonical = json.dumps(params.stages(), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def data_version(data_dir: str | Path, workers: int) -> str:
    """A content hash of a HAM10000 folder: its metadata file and every image's name and
    bytes. Where the folder lives (a DVC workspace, a copy fetched from S3) does not
    matter, only what it holds."""
    root = Path(data_dir)
    digest = hashlib.sha256()
    metadata = find_metadata(root)
    digest.update(metadata.name.encode() + b"\0" + metadata.read_bytes())
    images = sorted(index_images(root).items())
    hashes = content_hashes(root, [p.as_posix() for _, p in images], workers)
    for (image_id, _), sha in zip(images, hashes, strict=True):
        digest.update(f"\n{image_id}:{sha}".encode())
    return digest.hexdigest()


def run_provenance(params: Params, data_dir: str | Path) -> dict[str, str]:
    """The provenance tags of a run that reads ``data_dir`` with ``params``."""
    return {
        "git_commit": git_commit(),
        "params.hash": params_hash(params),
        "data.version": data_version(data_dir, params.data.workers),
        "image": os.environ.get(IMAGE_ENV) or "none",
        "kfp.run_id": os.environ.get(KFP_RUN_ENV) or "none",
    }


def changed_inputs(recorded: dict[str, str], current: dict[str, str]) -> list[str]:
    """The input keys in which ``current`` differs from ``recorded`` (empty: nothing
    changed). A key that was never recorded counts as changed."""
    return [key for key in INPUT_KEYS if recorded.get(key) != current.get(key)]
