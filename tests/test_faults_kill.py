"""SIGKILL at any moment: the rerun finishes with the same bytes as an uninterrupted run.

Findings that these tests pin down:

- After Snakemake itself is killed, its lock stays behind and every later run
  fails with LockException until ``snakemake --unlock``.
- A job that was killed after its outputs were all written (or one whose
  output was written in place) is marked incomplete, and a plain rerun stops
  with IncompleteFilesException until it is given ``--rerun-incomplete``.
  That check comes first, so after such a kill the lock error appears only
  once the flag is given.
- A job killed while Snakemake lives is cleaned up by Snakemake, and a plain
  rerun redoes it.
- A writer killed mid-write leaves its hidden temporary file
  (``.NAME.XXXXXXXX.tmp``, or ``.pip-download-*`` for a pypi source) beside
  the final path. No rule reads it, and nothing removes it.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import psutil
import pytest
from polars.testing import assert_frame_equal

from helpers_faults import (
    ReferenceRun,
    SHARD_0,
    SHARD_1,
    incomplete_marker,
    job_processes,
    kill_process_group,
    outputs_differing_from,
    prepared_workdir,
    read_leaderboard_numbers,
    read_predictions,
    reference_run,
    run_snakemake,
    start_snakemake,
    unreadable_outputs,
    wait_until,
)
from workflow_runner import write_config

pytestmark = pytest.mark.slow

KILL_SEED = 20_240_601
KILLS = 3

RERUN_FLAGS = ("--cores", "2", "--rerun-incomplete")


def test_group_kill_at_random_moments_then_rerun(tmp_path_factory: pytest.TempPathFactory):
    reference = reference_run(tmp_path_factory)
    workdir = tmp_path_factory.mktemp("killed")
    write_config(workdir, reference.config)
    moments = random.Random(KILL_SEED)

    for attempt in range(KILLS):
        delay_s = moments.uniform(1.0, 0.45 * reference.seconds)
        process, log = start_snakemake(workdir, *RERUN_FLAGS)
        try:
            process.wait(timeout=delay_s)
        except subprocess.TimeoutExpired:
            survivors = kill_process_group(process)
            assert survivors == [], f"attempt {attempt}: processes outlived the group kill: {survivors}"
        else:
            assert process.returncode == 0, log.read_text()

        assert unreadable_outputs(workdir) == [], f"attempt {attempt} killed after {delay_s:.1f} s"
        assert outputs_differing_from(workdir, reference.workdir) == [], f"attempt {attempt} after {delay_s:.1f} s"
        unlocked = run_snakemake(workdir, "--unlock")
        assert unlocked.returncode == 0, unlocked.output

    finished = run_snakemake(workdir, *RERUN_FLAGS)
    assert finished.returncode == 0, finished.output
    assert unreadable_outputs(workdir) == []
    assert outputs_differing_from(workdir, reference.workdir) == []
    assert_frame_equal(read_predictions(workdir), read_predictions(reference.workdir))
    assert_frame_equal(read_leaderboard_numbers(workdir), read_leaderboard_numbers(reference.workdir))


def _kill_after_partial_output(reference: ReferenceRun, workdir: Path) -> bytes:
    """Kill a shard's job after half its Parquet file was written to the final path; return the whole file.

    The half file simulates what a writer without atomic renames leaves when
    it is killed. Snakemake treats it like the complete output of a job killed
    after writing it but before exiting.
    """
    prepared_workdir(reference, workdir)
    process, _ = start_snakemake(workdir, "--cores", "1", SHARD_0)
    assert wait_until(lambda: incomplete_marker(workdir, SHARD_0).exists(), timeout_s=120)
    complete = (reference.workdir / SHARD_0).read_bytes()
    (workdir / SHARD_0).write_bytes(complete[: len(complete) // 2])
    kill_process_group(process)
    return complete


def test_partial_output_needs_rerun_incomplete(tmp_path_factory: pytest.TempPathFactory):
    reference = reference_run(tmp_path_factory)
    workdir = tmp_path_factory.mktemp("incomplete")
    complete = _kill_after_partial_output(reference, workdir)

    # Snakemake's own defaults, whatever profiles/default sets. It checks for
    # incomplete outputs while it builds the DAG, before it takes the lock.
    refused = run_snakemake(workdir, "--workflow-profile", "none", "--cores", "1")
    assert refused.returncode != 0
    assert "IncompleteFilesException" in refused.output
    assert "--rerun-incomplete" in refused.output
    assert SHARD_0 in refused.output
    assert not (workdir / "results" / "leaderboard.parquet").exists()

    locked = run_snakemake(workdir, "--cores", "1", "--rerun-incomplete", SHARD_0)
    assert locked.returncode != 0
    assert "LockException" in locked.output
    assert "--unlock" in locked.output

    assert run_snakemake(workdir, "--unlock").returncode == 0
    rerun = run_snakemake(workdir, "--cores", "1", "--rerun-incomplete", SHARD_0)
    assert rerun.returncode == 0, rerun.output
    assert (workdir / SHARD_0).read_bytes() == complete


def test_default_profile_reruns_partial_output(tmp_path_factory: pytest.TempPathFactory):
    reference = reference_run(tmp_path_factory)
    workdir = tmp_path_factory.mktemp("incomplete-profile")
    _kill_after_partial_output(reference, workdir)
    assert run_snakemake(workdir, "--unlock").returncode == 0

    planned = run_snakemake(workdir, "--cores", "1", "--dry-run", SHARD_0)
    assert planned.returncode == 0, planned.output
    assert "evaluate_shard" in planned.output


def test_killed_evaluation_job_is_redone(tmp_path_factory: pytest.TempPathFactory):
    reference = reference_run(tmp_path_factory)
    workdir = prepared_workdir(reference, tmp_path_factory.mktemp("job-killed"))
    process, log = start_snakemake(workdir, "--cores", "2", SHARD_0, SHARD_1)

    # Kill the first job that has started its DataLoader worker, mid-evaluation.
    def job_with_worker() -> tuple[psutil.Process, list[psutil.Process]] | None:
        for job in job_processes(process, "evaluate_shard"):
            try:
                workers = job.children()
            except psutil.NoSuchProcess:
                continue
            if workers:
                return job, workers
        return None

    found = wait_until(job_with_worker, timeout_s=120, interval_s=0.002)
    assert found, log.read_text()
    job, workers = found
    job.kill()
    process.wait(timeout=300)

    output = log.read_text()
    assert process.returncode != 0
    assert "Error in rule evaluate_shard" in output
    # The orphaned worker notices that its parent is gone and exits.
    _, alive = psutil.wait_procs(workers, timeout=60)
    assert [worker for worker in alive if worker.status() != psutil.STATUS_ZOMBIE] == []
    assert unreadable_outputs(workdir) == []

    rerun = run_snakemake(workdir, "--cores", "2", SHARD_0, SHARD_1)
    assert rerun.returncode == 0, rerun.output
    assert "evaluate_shard" in rerun.output
    assert outputs_differing_from(workdir, reference.workdir) == []
    assert_frame_equal(read_predictions(workdir), read_predictions(reference.workdir))
