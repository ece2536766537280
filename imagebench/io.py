"""Atomic file output: a killed job never leaves a half-written file at a final path."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagebench.errors import OutputError

if TYPE_CHECKING:
    import polars as pl

# Errors that mean the folder cannot take the file, whatever its content.
_WRITE_FAILURES = {
    errno.ENOSPC: "the file system is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file exceeds the file size limit (ulimit -f)",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` and rename it onto ``path`` on success.

    The temporary file lives in the same folder so that the final ``os.replace``
    is a rename within one file system, which POSIX makes atomic. On any
    exception the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    with _reported_write_failure(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        with _reported_write_failure(target):
            yield temporary
            _fsync_file(temporary)
            # mkstemp creates the file with mode 0600; give it the mode a plain
            # open() would, so that other users of a shared results folder can read it.
            os.chmod(temporary, 0o666 & ~_current_umask())
            os.replace(temporary, target)
            _fsync_directory(target.parent)
    finally:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def _reported_write_failure(target: Path) -> Iterator[None]:
    """Raise OutputError naming ``target`` when the file system rejects the write, and re-raise other errors."""
    try:
        yield
    except OSError as error:
        reason = _WRITE_FAILURES.get(error.errno)
        if reason is None:
            raise
        raise OutputError(
            f"cannot write {target}: {reason} ({error.strerror or error}). Free space, raise the limit or make "
            f"the folder writable, then rerun. {target} was left as it was."
        ) from error


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Write ``record`` as indented JSON with sorted keys, so reruns give identical bytes."""
    write_text_atomic(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def write_parquet_atomic(
    frame: "pl.DataFrame",
    path: str | os.PathLike[str],
    *,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write ``frame`` to Parquet with optional key-value metadata in the file footer."""
    table = frame.to_arrow()
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({key.encode(): value.encode() for key, value in metadata.items()})
        table = table.replace_schema_metadata(merged)

    import pyarrow.parquet as pq

    with atomic_path(path) as temporary:
        pq.write_table(table, temporary, compression="zstd")


def read_parquet_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """Return the key-value metadata of a Parquet file's footer, decoded as text."""
    import pyarrow.parquet as pq

    raw = pq.read_schema(path).metadata or {}
    return {key.decode(): value.decode() for key, value in raw.items() if key != b"ARROW:schema"}


def sha256_file(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
