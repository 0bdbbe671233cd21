"""`skinlesion data download`: the official HAM10000 files from Harvard Dataverse.

Files are listed through Dataverse's file-listing API, fetched with HTTP range requests
(an interrupted download resumes from its ``.part`` file), verified against the checksum
in the listing, and the image archives unpacked into the official layout.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.exceptions import ChunkedEncodingError
from tqdm import tqdm

from skinlesion.errors import SkinlesionError

log = logging.getLogger(__name__)

DATAVERSE_SERVER = "https://dataverse.harvard.edu"
HAM10000_DOI = "doi:10.7910/DVN/DBW86T"
# The files the flow needs; the dataset also has test images and segmentations.
REQUIRED_PREFIXES: tuple[str, ...] = (
    "HAM10000_metadata",
    "HAM10000_images_part_1",
    "HAM10000_images_part_2",
)
CHUNK = 1 << 14  # small enough that little is lost when a connection drops
TIMEOUT_S = 60


class DownloadError(SkinlesionError, RuntimeError):
    """The download could not be completed; the message says what to do instead."""


@dataclass(frozen=True)
class RemoteFile:
    """One file in the Dataverse listing."""

    file_id: int
    name: str
    size: int | None
    checksum_type: str
    checksum: str


def _offline_hint(server: str, err: Exception) -> DownloadError:
    return DownloadError(
        f"cannot reach {server} ({type(err).__name__}). Without network access, point the "
        "flow at a local HAM10000 copy instead: set data.raw_dir in params.yaml (or link "
        "data/raw/ham10000 to it), or pass --data-dir DIR to each command."
    )


def list_files(server: str, doi: str, session: requests.Session) -> list[RemoteFile]:
    """The latest published version's files, with their checksums."""
    url = f"{server.rstrip('/')}/api/datasets/:persistentId/versions/:latest-published/files"
    try:
        resp = session.get(url, params={"persistentId": doi}, timeout=TIMEOUT_S)
    except requests.ConnectionError as err:
        raise _offline_hint(server, err) from err
    if resp.status_code != 200:
        raise DownloadError(f"file listing failed: HTTP {resp.status_code} from {url}")
    files = []
    for entry in resp.json().get("data", []):
        data = entry.get("dataFile", {})
        checksum = data.get("checksum") or {"type": "MD5", "value": data.get("md5", "")}
        files.append(
            RemoteFile(
                file_id=int(data["id"]),
                # Tabular files are served as .tab unless the original is asked for.
                name=data.get("originalFileName") or data.get("filename") or entry["label"],
                size=data.get("originalFileSize") or data.get("filesize"),
                checksum_type=str(checksum.get("type", "MD5")).lower().replace("-", ""),
                checksum=str(checksum.get("value", "")).lower(),
            )
        )
    return files


def _checksum(path: Path, kind: str) -> str:
    try:
        digest = hashlib.new(kind)
    except ValueError as err:
        raise DownloadError(f"unsupported checksum type {kind!r}") from err
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(server: str, remote: RemoteFile, dest: Path, session: requests.Session) -> Path:
    """Download one file into ``dest``, resuming a ``.part`` file, then verify it."""
    final = dest / remote.name
    if final.is_file() and _checksum(final, remote.checksum_type) == remote.checksum:
        log.info("%s already present and verified", remote.name)
        return final
    part = dest / f"{remote.name}.part"
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    url = f"{server.rstrip('/')}/api/access/datafile/{remote.file_id}"
    try:
        with session.get(
            url, params={"format": "original"}, headers=headers, stream=True, timeout=TIMEOUT_S
        ) as resp:
            if resp.status_code == 416:  # the .part is already complete
                resp.close()
            elif resp.status_code not in (200, 206):
                raise DownloadError(f"{remote.name}: HTTP {resp.status_code} from {url}")
            else:
                if resp.status_code == 200:
                    offset = 0  # server ignored the range: start over
                mode = "ab" if offset else "wb"
                with (
                    part.open(mode) as fh,
                    tqdm(
                        total=remote.size,
                        initial=offset,
                        unit="B",
                        unit_scale=True,
                        desc=remote.name,
                        file=sys.stderr,
                        mininterval=1.0,
                    ) as bar,
                ):
                    for block in resp.iter_content(CHUNK):
                        fh.write(block)
                        bar.update(len(block))
    except (requests.ConnectionError, requests.Timeout, ChunkedEncodingError) as err:
        have = part.stat().st_size if part.exists() else 0
        raise DownloadError(
            f"{remote.name}: download interrupted after {have} bytes "
            f"({type(err).__name__}); run the same command again to resume"
        ) from err
    actual = _checksum(part, remote.checksum_type)
    if actual != remote.checksum:
        part.unlink()
        raise DownloadError(
            f"{remote.name}: {remote.checksum_type} checksum mismatch "
            f"(expected {remote.checksum}, got {actual}); the partial file was removed, "
            "run the command again"
        )
    part.replace(final)
    return final


def unpack(archive: Path, dest: Path) -> Path:
    """Unpack ``X.zip`` into ``dest/X/``, flattening a single top folder of the same name."""
    target = dest / archive.stem
    marker = target / ".unpacked"
    if marker.is_file():
        return target
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            name = Path(member.filename)
            if member.is_dir() or name.is_absolute() or ".." in name.parts:
                continue
            parts = (
                name.parts[1:]
                if name.parts[0] == archive.stem and len(name.parts) > 1
                else name.parts
            )
            out = target.joinpath(*parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst)
    marker.touch()
    return target


def download_ham10000(
    dest: str | Path,
    server: str = DATAVERSE_SERVER,
    doi: str = HAM10000_DOI,
    prefixes: Iterable[str] | None = REQUIRED_PREFIXES,
) -> Path:
    """Fetch, verify and unpack the HAM10000 files into ``dest``; returns ``dest``."""
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    with requests.Session() as session:
        files = list_files(server, doi, session)
        wanted = [
            f for f in files if prefixes is None or any(f.name.startswith(p) for p in prefixes)
        ]
        if not wanted:
            raise DownloadError(f"the listing of {doi} at {server} has none of the HAM10000 files")
        for remote in wanted:
            path = fetch(server, remote, root, session)
            if path.suffix == ".zip":
                unpack(path, root)
    return root
