"""`skinlesion data download` against a fake Dataverse served on 127.0.0.1."""

from __future__ import annotations

import socket
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skinlesion.cli.main import command_line
from skinlesion.data.catalog import load_catalog
from skinlesion.data.download import HAM10000_DOI, DownloadError, download_ham10000
from skinlesion.data.synth import make_synthetic_dataset
from tests.fakes.dataverse import FakeDataverse, serve

pytestmark = pytest.mark.code
app = command_line()


def _zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, path.name)
    return archive


@pytest.fixture(scope="module")
def official_files(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """What Dataverse holds: metadata CSV and two image zips (official layout)."""
    src = tmp_path_factory.mktemp("official")
    make_synthetic_dataset(src, n_images=30, seed=3, layout="official")
    return {
        1: src / "HAM10000_metadata.csv",
        2: _zip_folder(src / "HAM10000_images_part_1", src / "HAM10000_images_part_1.zip"),
        3: _zip_folder(src / "HAM10000_images_part_2", src / "HAM10000_images_part_2.zip"),
        4: _zip_folder(src / "HAM10000_images_part_2", src / "ISIC2018_Task3_Test_Images.zip"),
    }


def test_download_verifies_and_unpacks_official_layout(official_files, tmp_path):
    with serve(FakeDataverse(HAM10000_DOI, official_files)) as fake:
        dest = download_ham10000(tmp_path / "dl", server=fake.url)
    catalog = load_catalog(dest)
    assert len(catalog) == 30
    assert catalog["image_path"].notna().all()
    assert not (dest / "ISIC2018_Task3_Test_Images.zip").exists()  # only what the flow needs


def test_interrupted_download_resumes_with_range(official_files, tmp_path):
    fake = FakeDataverse(HAM10000_DOI, official_files, cut_after={2: 50_000})
    with serve(fake):
        with pytest.raises(DownloadError, match="run the same command again to resume"):
            download_ham10000(tmp_path / "dl", server=fake.url)
        partial = tmp_path / "dl" / "HAM10000_images_part_1.zip.part"
        saved = partial.stat().st_size
        assert 0 < saved <= 50_000
        download_ham10000(tmp_path / "dl", server=fake.url)
    assert ("/api/access/datafile/2", f"bytes={saved}-") in fake.requests
    assert len(load_catalog(tmp_path / "dl")) == 30


def test_second_download_reuses_verified_files(official_files, tmp_path):
    fake = FakeDataverse(HAM10000_DOI, official_files)
    with serve(fake):
        download_ham10000(tmp_path / "dl", server=fake.url)
        fake.requests.clear()
        download_ham10000(tmp_path / "dl", server=fake.url)
    assert [p for p, _ in fake.requests if "/access/" in p] == []


def test_checksum_mismatch_is_an_error(official_files, tmp_path):
    with (
        serve(FakeDataverse(HAM10000_DOI, official_files, corrupt={3})) as fake,
        pytest.raises(DownloadError, match="checksum mismatch"),
    ):
        download_ham10000(tmp_path / "dl", server=fake.url)
    assert not (tmp_path / "dl" / "HAM10000_images_part_2.zip").exists()


def test_offline_gives_one_clear_message(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = CliRunner().invoke(
        app, ["data", "download", "--dest", str(tmp_path), "--server", f"http://127.0.0.1:{port}"]
    )
    assert result.exit_code == 1
    assert "cannot reach" in result.output
    assert "data.raw_dir" in result.output and "--data-dir" in result.output
