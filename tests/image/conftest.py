"""The step image under test: `make image-test` names it in $SKINLESION_IMAGE_UNDER_TEST.

Without that variable these tests skip (a plain `pytest` has no image to test); with it,
a missing engine or image fails them, so CI cannot pass by skipping."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

IMAGE_ENV = "SKINLESION_IMAGE_UNDER_TEST"
ROOT = Path(__file__).resolve().parents[2]


def head_commit() -> str:
    """The checkout's HEAD: the commit an image built by `make image` here must carry."""
    out = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@pytest.fixture(scope="session")
def image() -> str:
    name = os.environ.get(IMAGE_ENV)
    if not name:
        pytest.skip(f"no image under test (set {IMAGE_ENV}, or run `make image-test`)")
    if shutil.which("docker") is None:
        pytest.fail("no docker CLI: run infra/docker/local-engine.sh or install an engine")
    found = subprocess.run(["docker", "image", "inspect", name], capture_output=True)
    if found.returncode != 0:
        pytest.fail(f"image {name} not found: build it with `make image`")
    return name


def docker_run(
    image: str, *args: str, mounts: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """`docker run --rm` on the host network, with ``mounts`` (host path -> container
    path, ``:ro`` suffix allowed on the container side)."""
    volumes = [f"--volume={host}:{inside}" for host, inside in (mounts or {}).items()]
    return subprocess.run(
        ["docker", "run", "--rm", "--network=host", *volumes, image, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
