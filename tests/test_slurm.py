"""The workflow on a real one-node SLURM cluster, through Snakemake's SLURM executor plugin.

The cluster is the one that .ci/slurm/start-cluster.sh starts: the one in
$IMAGEBENCH_SLURM_DIR (.ci/run starts it before pytest), else one already
running in /tmp/imagebench-slurm, else one that this module starts there and
stops at its end. Every Snakemake run here uses a small config: one model
(EfficientNet-Lite0 from its PyPI wheel), 16 sample images, 2 shards.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from conftest import sample_files
from helpers_faults import markdown_without_measured
from helpers_slurm import (
    DEFAULT_STATE_DIR,
    REPO,
    SlurmCluster,
    SlurmUnavailable,
    has_slurm_plugin,
    is_cluster_up,
    reason_cluster_cannot_start,
    run_id_of,
    run_snakemake,
    snakemake_command,
    start_cluster,
    stop_cluster,
    submitted_job_ids,
    wait_for,
)
from polars.testing import assert_frame_equal

from imagebench.aggregate import LEADERBOARD_COLUMNS
from workflow_runner import planned_jobs, small_config, write_config

from imagebench.evaluate import read_prediction_metadata

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SLURM_CPU_PROFILE = REPO / "profiles" / "slurm-cpu"
SLURM_GPU_PROFILE = REPO / "profiles" / "slurm"
SHARDS = (0, 1)
SHARD_1_COMMENT = "rule_evaluate_shard_wildcards_sample_efficientnet_lite0_1_2"
# The command line replaces the settings of profiles/slurm that name a site
# (partition, account) or exceed the test node (8 threads, 32 GB). The
# profile's executor, GPU request, resource scope and grouping stay in force.
GPU_PROFILE_OVERRIDES = (
    "--default-resources", "slurm_partition=debug", "runtime=30", "mem_mb=1000",
    "--set-resources", "evaluate_shard:gpu=1", "evaluate_shard:mem_mb=2000", "evaluate_shard:runtime=20",
    "--set-threads", "evaluate_shard=1",
    "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "2",
)


def prediction_path(workdir: Path, shard: int) -> Path:
    return workdir / "results" / "predictions" / "sample" / "efficientnet_lite0" / f"shard-{shard}-of-2.parquet"


def evaluation_log_path(workdir: Path, shard: int) -> Path:
    return workdir / "results" / "logs" / "evaluate_shard" / "sample" / "efficientnet_lite0" / f"shard-{shard}-of-2.log"


def copy_workdir(source: Path, destination: Path) -> Path:
    """Copy a finished run, Snakemake's metadata included, so that a test can change it alone."""
    shutil.copytree(source, destination, symlinks=True)
    return destination


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[SlurmCluster]:
    if not has_slurm_plugin():
        pytest.fail("snakemake-executor-plugin-slurm is not installed; install it with pip install -e '.[test,slurm]'")

    configured = os.environ.get("IMAGEBENCH_SLURM_DIR")
    state_dir = Path(configured) if configured else DEFAULT_STATE_DIR
    if is_cluster_up(state_dir):
        yield SlurmCluster(state_dir=state_dir)
        return
    if configured:
        pytest.fail(
            f"IMAGEBENCH_SLURM_DIR={configured} is set but no SLURM cluster responds there; "
            f"start it with .ci/slurm/start-cluster.sh {configured}"
        )

    reason = reason_cluster_cannot_start()
    if reason is not None:
        pytest.skip(reason)
    try:
        cluster = start_cluster(state_dir=state_dir)
    except SlurmUnavailable as error:
        pytest.skip(f"the test SLURM cluster cannot start here: {error}")
    yield cluster
    stop_cluster(cluster)


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("sample")
    for source in sample_files(sample_dir, 16):
        (root / source.name).symlink_to(source)
    return root


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory, sample_root: Path) -> Path:
    workdir = tmp_path_factory.mktemp("local-run")
    write_config(workdir, small_config(sample_root))
    run_snakemake(workdir, "--cores", "2", env=dict(os.environ))
    return workdir


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory: pytest.TempPathFactory, sample_root: Path, slurm_cluster: SlurmCluster):
    workdir = tmp_path_factory.mktemp("slurm-run")
    write_config(workdir, small_config(sample_root))
    result = run_snakemake(workdir, "--profile", str(SLURM_CPU_PROFILE), env=slurm_cluster.env())
    run_id = run_id_of(result.stdout + result.stderr)
    return workdir, slurm_cluster.jobs(run_id=run_id)


def _evaluation_jobs(jobs):
    return [job for job in jobs if job.comment.startswith("rule_evaluate_shard")]


def test_evaluation_jobs_submitted_with_sbatch(slurm_run, slurm_cluster):
    _, all_jobs = slurm_run
    jobs = _evaluation_jobs(all_jobs)
    comments = sorted(job.comment for job in jobs)

    assert comments == [
        "rule_evaluate_shard_wildcards_sample_efficientnet_lite0_0_2",
        "rule_evaluate_shard_wildcards_sample_efficientnet_lite0_1_2",
    ]
    assert {job.state for job in jobs} == {"COMPLETED"}
    assert {job.job_id for job in jobs} <= submitted_job_ids(slurm_cluster.slurmctld_log)


def test_throughput_jobs_submitted_with_sbatch(slurm_run, slurm_cluster):
    _, all_jobs = slurm_run
    others = [job for job in all_jobs if job not in _evaluation_jobs(all_jobs)]

    assert [job.comment for job in others] == ["rule_measure_throughput_wildcards_efficientnet_lite0_cpu-fp32-b4"]
    assert {job.state for job in others} == {"COMPLETED"}
    assert {job.job_id for job in others} <= submitted_job_ids(slurm_cluster.slurmctld_log)


def test_prediction_metadata_names_slurm_job(slurm_run):
    workdir, all_jobs = slurm_run
    job_ids = {job.job_id for job in _evaluation_jobs(all_jobs)}

    runs = [read_prediction_metadata(prediction_path(workdir, shard))["run"] for shard in SHARDS]

    assert {run["slurm_job_id"] for run in runs} == job_ids
    assert {run["host"] for run in runs} == {socket.gethostname()}
    assert {run["device"] for run in runs} == {"cpu"}


def test_slurm_log_names_job_and_host(slurm_run):
    workdir, all_jobs = slurm_run
    logs = workdir / ".snakemake" / "slurm_logs" / "rule_evaluate_shard"

    for job in _evaluation_jobs(all_jobs):
        wildcards = job.comment.removeprefix("rule_evaluate_shard_wildcards_")
        log = logs / wildcards / f"{job.job_id}.log"
        assert log.is_file(), f"no SLURM log for job {job.job_id} at {log}"
        assert f"Host: {socket.gethostname()}" in log.read_text()


def test_evaluation_log_names_slurm_job_host_device(slurm_run):
    workdir, _ = slurm_run

    for shard in SHARDS:
        run = read_prediction_metadata(prediction_path(workdir, shard))["run"]
        text = evaluation_log_path(workdir, shard).read_text()
        match = re.search(r"running on host (\S+), device (\S+) \(.*\), SLURM job (\S+)", text)
        assert match is not None, f"no line naming host, device and SLURM job in the log of shard {shard}:\n{text}"
        assert match.group(1) == run["host"]
        assert match.group(2) == run["device"]
        assert match.group(3) == run["slurm_job_id"]


def test_slurm_predictions_equal_local_run(slurm_run, local_run):
    workdir, _ = slurm_run

    for shard in SHARDS:
        assert_frame_equal(pl.read_parquet(prediction_path(workdir, shard)), pl.read_parquet(prediction_path(local_run, shard)))


def test_slurm_leaderboard_equals_local_run(slurm_run, local_run):
    workdir, _ = slurm_run

    # Accuracy columns only: the throughput columns are timings, different in every run.
    assert_frame_equal(
        pl.read_parquet(workdir / "results" / "leaderboard.parquet", columns=LEADERBOARD_COLUMNS),
        pl.read_parquet(local_run / "results" / "leaderboard.parquet", columns=LEADERBOARD_COLUMNS),
    )
    assert markdown_without_measured((workdir / "results" / "leaderboard.md").read_text()) == markdown_without_measured(
        (local_run / "results" / "leaderboard.md").read_text()
    )


def test_cancelled_job_output_not_trusted(slurm_run, local_run, slurm_cluster, tmp_path):
    workdir = copy_workdir(slurm_run[0], tmp_path / "run")
    prediction_path(workdir, 1).unlink()
    evaluation_log_path(workdir, 1).unlink()
    output_log = tmp_path / "snakemake.log"

    with open(output_log, "w") as output:
        process = subprocess.Popen(
            snakemake_command(workdir, "--profile", str(SLURM_CPU_PROFILE)),
            cwd=workdir, env=slurm_cluster.env(), stdout=output, stderr=subprocess.STDOUT, text=True,
        )
    try:
        # The job's Python has opened the rule's log once the file exists.
        # Loading torch and the model takes seconds more before any output.
        wait_for(
            lambda: slurm_cluster.running_job(comment=SHARD_1_COMMENT) is not None
            and evaluation_log_path(workdir, 1).exists(),
            timeout=300,
            description="the evaluation job of shard 1 to run",
        )
        cancelled = slurm_cluster.running_job(comment=SHARD_1_COMMENT)
        assert cancelled is not None, "the evaluation job of shard 1 finished before it could be cancelled"
        slurm_cluster.cancel(cancelled.job_id)
        returncode = process.wait(timeout=300)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=60)

    assert returncode != 0, output_log.read_text()
    assert {job.state for job in slurm_cluster.jobs() if job.job_id == cancelled.job_id} == {"CANCELLED"}
    assert not prediction_path(workdir, 1).exists()
    assert planned_jobs(workdir).get("evaluate_shard") == 1

    run_snakemake(workdir, "--profile", str(SLURM_CPU_PROFILE), env=slurm_cluster.env())

    assert_frame_equal(pl.read_parquet(prediction_path(workdir, 1)), pl.read_parquet(prediction_path(local_run, 1)))
    assert planned_jobs(workdir) == {}


def test_gpu_profile_groups_shards_on_one_gpu(slurm_run, local_run, slurm_cluster, tmp_path):
    """profiles/slurm submits both shards as one job with one GPU, which runs them one after another.

    The test cluster's GPU is a stand-in without a device (start-cluster.sh),
    so this checks the sbatch request and the grouping, not CUDA evaluation.
    """
    gres = subprocess.run(
        ["sinfo", "--noheader", "--format=%G"], env=slurm_cluster.env(), capture_output=True, text=True, check=True
    ).stdout.strip()
    if "gpu" not in gres:
        pytest.skip(f"the test cluster declares no GPU (sinfo reports {gres!r}); start it with IMAGEBENCH_SLURM_STANDIN_GPU=1")
    workdir = copy_workdir(slurm_run[0], tmp_path / "run")
    for shard in SHARDS:
        prediction_path(workdir, shard).unlink()

    result = run_snakemake(
        workdir, "--profile", str(SLURM_GPU_PROFILE), *GPU_PROFILE_OVERRIDES, env=slurm_cluster.env()
    )

    jobs = slurm_cluster.jobs(run_id=run_id_of(result.stdout + result.stderr))
    assert [job.comment for job in jobs] == ["rule_evaluate_evaluate_shard"]
    job = subprocess.run(
        ["scontrol", "show", "job", jobs[0].job_id], env=slurm_cluster.env(), capture_output=True, text=True, check=True
    ).stdout
    assert "TresPerJob=gres:gpu:1" in job
    # One CPU and 2 x 20 minutes: the shards ran in series, not side by side.
    assert re.search(r"\bNumCPUs=1\b", job), job
    assert re.search(r"\bTimeLimit=00:40:00\b", job), job
    for shard in SHARDS:
        assert read_prediction_metadata(prediction_path(workdir, shard))["run"]["slurm_job_id"] == jobs[0].job_id
        assert_frame_equal(
            pl.read_parquet(prediction_path(workdir, shard)), pl.read_parquet(prediction_path(local_run, shard))
        )
