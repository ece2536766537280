"""Datasets fetched as one archive (tar, tar.gz) over https, verified by sha256.

The download goes through the checkpoint fetcher, so the same rules hold: https
only, the sha256 checked before the file reaches its final path, and
``sha256: lock`` recording the hash of the first download into the lock file
and checking every later download against it. That mode exists for public
archives whose hashes are not published, such as ImageNetV2's.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from imagebench.checkpoints.fetch import fetch_weights
from imagebench.errors import DatasetError
from imagebench.io import write_json_atomic

logger = logging.getLogger(__name__)

PROVENANCE_NAME = ".imagebench-source.json"


def fetch_archive_dataset(
    *,
    dataset: str,
    url: str,
    sha256: str,
    destination: Path,
    lock_file: Path | None = None,
    allow_insecure_localhost: bool = False,
) -> dict[str, Any]:
    """Download the archive at ``url``, verify it, and unpack it into ``destination``.

    The archive is unpacked into a temporary folder beside ``destination`` and
    renamed into place once complete, so a killed job leaves no partial folder.
    Members that would land outside the folder, links and device files are
    rejected by tarfile's ``data`` filter. Returns the download's provenance.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp"))
    try:
        archive = staging / "archive"
        provenance = fetch_weights(
            model=f"dataset {dataset}",
            source={"url": url, "sha256": sha256},
            destination=archive,
            lock_file=lock_file,
            allow_insecure_localhost=allow_insecure_localhost,
        )
        unpacked = staging / "unpacked"
        _unpack(archive, unpacked, url=url)
        write_json_atomic(unpacked / PROVENANCE_NAME, provenance)
        if destination.exists():
            shutil.rmtree(destination)
        os.rename(unpacked, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    logger.info("unpacked %s (sha256 %s) into %s", url, provenance["sha256"], destination)
    return provenance


def _unpack(archive: Path, folder: Path, *, url: str) -> None:
    try:
        with tarfile.open(archive) as handle:
            handle.extractall(folder, filter="data")
    except (tarfile.TarError, OSError) as error:
        raise DatasetError(
            f"could not unpack the archive from {url}: {error}. The file passed its sha256 check, "
            "so the archive itself is damaged or not a tar file; check the url."
        ) from error
