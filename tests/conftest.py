"""Shared fixtures: synthetic HAM10000 folders and the real data when present."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from skinlesion.params import load_params
from skinlesion.synth import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("SKINLESION_REAL_DATA_DIR", ROOT.parent / "shared/data/ham10000"))


@pytest.fixture(scope="session")
def params() -> dict:
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 120-image synthetic dataset, shared read-only by the whole session."""
    out = tmp_path_factory.mktemp("synth") / "ham10000"
    make_synthetic_dataset(out, n_images=120, seed=1)
    return out


@pytest.fixture
def synth_copy(synth_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic dataset that a test may break."""
    return Path(shutil.copytree(synth_dir, tmp_path / "ham10000"))


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    if not (REAL_DATA / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"real HAM10000 data not found at {REAL_DATA}")
    return REAL_DATA
