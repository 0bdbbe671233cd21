"""Checkpoints that survive a kill: kept only while params and data are unchanged, and
mirrored to S3 on the cluster so that a retried task on another node resumes."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def config_fingerprint(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def prepare_work_dir(work_dir: Path, config: dict[str, Any]) -> bool:
    """Keep checkpoints only if they come from the same configuration and data; returns
    whether an interrupted run is being continued."""
    stamp = work_dir / "config.sha256"
    fingerprint = config_fingerprint(config)
    if work_dir.exists() and (not stamp.is_file() or stamp.read_text() != fingerprint):
        log.warning(
            "discarding checkpoints in %s: they were made with other params or data", work_dir
        )
        shutil.rmtree(work_dir)
    resuming = (work_dir / "mlflow_run_id").is_file()
    work_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)
    return resuming


def remote_checkpoints(base_uri: str | None, model_name: str, kfp_run_id: str | None) -> str | None:
    """The S3 prefix of this training's checkpoints: one per pipeline run and model, so
    that a retried task of the same run finds them and another run does not."""
    if not base_uri:
        return None
    if not str(base_uri).startswith("s3://"):
        raise ValueError(f"train.checkpoint_uri must be an s3:// URI, not {base_uri!r}")
    run_key = kfp_run_id or "local"
    return f"{str(base_uri).rstrip('/')}/{run_key}/{model_name}"
