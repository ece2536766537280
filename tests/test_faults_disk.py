"""A full disk, a file size limit or a read-only results folder fail the job cleanly.

Each test runs the evaluation of one shard, from a prepared checkpoint and
manifest, into a folder that cannot take the prediction file (about 7 KB):

- RLIMIT_FSIZE (``ulimit -f``) of 5,000 bytes, set on the running job with
  prlimit. It works for any user, but only with ``workers: 0``, because
  torch's DataLoader passes batches through shared-memory files, and the
  same limit stops those before the prediction file is written.
- A 16 KiB tmpfs mounted on the predictions folder and filled to its last
  page, for ENOSPC. Mounting needs root, so the test is skipped without it.
- A read-only tmpfs mounted there, for EROFS (root ignores permission bits, so
  chmod cannot make a folder unwritable for it). Skipped without root. Here
  Snakemake fails before the job starts.

The run must fail with the operating system's reason, and leave neither a
file at the final path nor a temporary file beside it.
"""

from __future__ import annotations

import copy
import resource
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers_faults import (
    SHARD_0,
    SnakemakeResult,
    job_processes,
    mounted_tmpfs,
    outputs_differing_from,
    prepared_workdir,
    reference_run,
    run_snakemake,
    start_snakemake,
    wait_until,
)

pytestmark = pytest.mark.slow

FILE_SIZE_LIMIT_BYTES = 5_000
TMPFS_BYTES = 16 * 1024
PAGE_BYTES = resource.getpagesize()
SHARD_LOG = "results/logs/evaluate_shard/sample/efficientnet_lite0/shard-0-of-2.log"


def _prepared(tmp_path_factory: pytest.TempPathFactory, name: str, *, workers: int = 1) -> Path:
    reference = reference_run(tmp_path_factory)
    config = copy.deepcopy(reference.config)
    config["evaluation"]["workers"] = workers
    return prepared_workdir(reference, tmp_path_factory.mktemp(name), config=config)


def _error_line(workdir: Path) -> str:
    """Return the last line of the job's log, where the traceback names the exception."""
    return (workdir / SHARD_LOG).read_text().strip().splitlines()[-1]


def _leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


@dataclass(frozen=True)
class LimitedRun:
    workdir: Path
    result: SnakemakeResult
    error_line: str
    leftovers: list[str]


@pytest.fixture(scope="module")
def file_size_limited_run(tmp_path_factory: pytest.TempPathFactory) -> LimitedRun:
    workdir = _prepared(tmp_path_factory, "file-size-limit", workers=0)
    process, log = start_snakemake(workdir, "--cores", "1", SHARD_0)
    # Only the job gets the limit: Snakemake copies its rule files while it
    # parses them, and some are larger than the limit. The job imports torch
    # for seconds before it writes anything.
    jobs = wait_until(lambda: job_processes(process, "evaluate_shard"), timeout_s=120)
    assert jobs, log.read_text()
    jobs[0].rlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT_BYTES, FILE_SIZE_LIMIT_BYTES))
    process.wait(timeout=300)
    result = SnakemakeResult(returncode=process.returncode, output=log.read_text())
    leftovers = _leftovers((workdir / SHARD_0).parent)
    return LimitedRun(workdir=workdir, result=result, error_line=_error_line(workdir), leftovers=leftovers)


def test_file_size_limit_fails_shard_cleanly(file_size_limited_run: LimitedRun):
    assert file_size_limited_run.result.returncode != 0
    assert "Error in rule evaluate_shard" in file_size_limited_run.result.output
    assert "File too large" in file_size_limited_run.error_line
    assert file_size_limited_run.leftovers == []


def test_file_size_limit_message_names_output(file_size_limited_run: LimitedRun):
    assert SHARD_0 in file_size_limited_run.error_line
    assert "ulimit" in file_size_limited_run.error_line


def test_rerun_without_limit_matches_reference(
    tmp_path_factory: pytest.TempPathFactory, file_size_limited_run: LimitedRun
):
    workdir = file_size_limited_run.workdir
    rerun = run_snakemake(workdir, "--cores", "1", SHARD_0)
    assert rerun.returncode == 0, rerun.output
    assert outputs_differing_from(workdir, reference_run(tmp_path_factory).workdir) == []


def test_full_disk_fails_shard_cleanly(tmp_path_factory: pytest.TempPathFactory):
    workdir = _prepared(tmp_path_factory, "full-disk")
    predictions = (workdir / SHARD_0).parent
    with mounted_tmpfs(predictions, size_bytes=TMPFS_BYTES):
        (predictions / "filler").write_bytes(b"\0" * (TMPFS_BYTES - PAGE_BYTES))
        result = run_snakemake(workdir, "--cores", "1", SHARD_0)
        leftovers = _leftovers(predictions)

    assert result.returncode != 0
    assert "No space left on device" in _error_line(workdir)
    assert leftovers == ["filler"]


def test_read_only_results_fail_shard_cleanly(tmp_path_factory: pytest.TempPathFactory):
    workdir = _prepared(tmp_path_factory, "read-only")
    predictions = (workdir / SHARD_0).parent
    with mounted_tmpfs(predictions, size_bytes=TMPFS_BYTES, read_only=True):
        result = run_snakemake(workdir, "--cores", "1", SHARD_0)
        leftovers = _leftovers(predictions)

    # Snakemake itself stops before the job starts: removing a stale output
    # from a read-only file system fails with EROFS even when there is none.
    assert result.returncode != 0
    assert f"Read-only file system: '{SHARD_0}'" in result.output
    assert not (workdir / SHARD_LOG).exists()
    assert leftovers == []
    assert list((workdir / ".snakemake" / "locks").glob("*")) == []
