"""What a model was made from: code, parameters, data, image and pipeline run.

Every training run and registry version carries these as tags, so that a scheduled run
can tell whether anything changed since the champion was trained, and so that a person
can trace a version back to the exact inputs. The same functions run locally and inside
the step image, so the same inputs give the same figures in both places.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from skinlesion.config.params import Params

GIT_COMMIT_ENV = "SKINLESION_GIT_COMMIT"  # baked into the step image at build time
UNKNOWN = "unknown"
LESIONS_ARTIFACT = "lesions.json"  # a training run's train/val lesion ids, read by promotion

# The tags that say whether a new training could differ from the champion's.
INPUT_KEYS: tuple[str, ...] = ("data.version", "params.hash", "git_commit", "image")


@dataclass(frozen=True)
class RunOrigin:
    """Where a run happens: the Kubeflow pipeline run, the image its task runs in, and the
    hash of the pipeline run's whole params (a step holds only the sections it reads).

    All None on a laptop. The components pass them in from the run's placeholders and its
    first step, as arguments rather than environment variables, so that nothing a step
    does depends on what an earlier step in the same process left behind."""

    kfp_run_id: str | None = None
    image: str | None = None
    params_hash: str | None = None


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


def run_provenance(
    params: Params, data_version: str, origin: RunOrigin | None = None
) -> dict[str, str]:
    """The provenance tags of a run that reads data of ``data_version`` with ``params``,
    started from ``origin`` (default: a local run)."""
    origin = origin or RunOrigin()
    return {
        "git_commit": git_commit(),
        "params.hash": origin.params_hash or params.hash(),
        "data.version": data_version,
        "image": origin.image or "none",
        "kfp.run_id": origin.kfp_run_id or "none",
    }


def changed_inputs(recorded: dict[str, str], current: dict[str, str]) -> list[str]:
    """The input keys in which ``current`` differs from ``recorded`` (empty: nothing
    changed). A key that was never recorded counts as changed."""
    return [key for key in INPUT_KEYS if recorded.get(key) != current.get(key)]
