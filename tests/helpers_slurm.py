"""A one-node SLURM cluster for the tests: start, query and stop the cluster of .ci/slurm/."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START_SCRIPT = REPO / ".ci" / "slurm" / "start-cluster.sh"
STOP_SCRIPT = REPO / ".ci" / "slurm" / "stop-cluster.sh"
DEFAULT_STATE_DIR = Path("/tmp/imagebench-slurm")
# start-cluster.sh exits with this status where SLURM cannot be installed or started.
UNSUPPORTED_EXIT_STATUS = 2
SLURM_PLUGIN = "snakemake_executor_plugin_slurm"


class SlurmUnavailable(Exception):
    """SLURM cannot be installed or started on this machine (start-cluster.sh exited with status 2)."""


@dataclass(frozen=True)
class SlurmJob:
    job_id: str
    name: str
    comment: str
    state: str


@dataclass(frozen=True)
class SlurmCluster:
    """A running cluster whose configuration, state and logs are in ``state_dir``."""

    state_dir: Path

    @property
    def conf(self) -> Path:
        return self.state_dir / "slurm.conf"

    @property
    def slurmctld_log(self) -> Path:
        return self.state_dir / "slurmctld.log"

    def env(self) -> dict[str, str]:
        """Return this process's environment with SLURM_CONF pointing at this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def jobs(self, *, run_id: str | None = None) -> list[SlurmJob]:
        """List the jobs slurmctld still holds, finished ones included (for MinJobAge seconds).

        The SLURM executor plugin names every job of a Snakemake run after the
        run's id and puts the rule and wildcards into the job's comment.
        """
        command = ["squeue", "--states=all", "--noheader", "--format=%i|%j|%k|%T"]
        if run_id is not None:
            command.append(f"--name={run_id}")
        output = subprocess.run(command, env=self.env(), capture_output=True, text=True, check=True).stdout
        jobs = []
        for line in output.splitlines():
            job_id, name, comment, state = line.strip().split("|")
            jobs.append(SlurmJob(job_id=job_id, name=name, comment=comment, state=state))
        return jobs

    def running_job(self, *, comment: str) -> SlurmJob | None:
        return next((job for job in self.jobs() if job.comment == comment and job.state == "RUNNING"), None)

    def cancel(self, job_id: str) -> None:
        subprocess.run(["scancel", job_id], env=self.env(), check=True)


def is_cluster_up(state_dir: Path) -> bool:
    """Return whether slurmctld of the cluster in ``state_dir`` responds and its node accepts jobs."""
    conf = state_dir / "slurm.conf"
    if not conf.is_file() or shutil.which("sinfo") is None:
        return False
    result = subprocess.run(
        ["sinfo", "--noheader", "--format=%t"],
        env={**os.environ, "SLURM_CONF": str(conf)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.returncode == 0 and result.stdout.strip() in {"idle", "mix", "alloc"}


def reason_cluster_cannot_start() -> str | None:
    """Return why start-cluster.sh cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "starting a SLURM cluster needs root (slurmd runs jobs as their user); run as root or start one with .ci/slurm/start-cluster.sh"
    has_slurm = all(shutil.which(name) for name in ("slurmctld", "slurmd", "munged", "sbatch"))
    if not has_slurm and shutil.which("apt-get") is None:
        return "SLURM (slurm-wlm, munge) is not installed and apt-get is not available to install it"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_cluster(*, state_dir: Path) -> SlurmCluster:
    """Start a cluster in ``state_dir`` on free ports; raise SlurmUnavailable where SLURM cannot start."""
    env = {
        **os.environ,
        "IMAGEBENCH_SLURMCTLD_PORT": str(free_port()),
        "IMAGEBENCH_SLURMD_PORT": str(free_port()),
    }
    result = subprocess.run(
        [str(START_SCRIPT), str(state_dir)], env=env, capture_output=True, text=True, timeout=600
    )
    if result.returncode == UNSUPPORTED_EXIT_STATUS:
        raise SlurmUnavailable(result.stderr.strip())
    if result.returncode != 0:
        raise RuntimeError(f"{START_SCRIPT} {state_dir} failed with status {result.returncode}:\n{result.stderr}")
    return SlurmCluster(state_dir=state_dir)


def stop_cluster(cluster: SlurmCluster) -> None:
    subprocess.run([str(STOP_SCRIPT), str(cluster.state_dir)], check=True, capture_output=True, timeout=120)


def has_slurm_plugin() -> bool:
    return importlib.util.find_spec(SLURM_PLUGIN) is not None


def snakemake_command(workdir: Path, *arguments: str) -> list[str]:
    return [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        *arguments,
    ]


def run_snakemake(
    workdir: Path, *arguments: str, env: dict[str, str], timeout: float = 900
) -> subprocess.CompletedProcess:
    """Run Snakemake in ``workdir`` and raise with its output when it fails."""
    result = subprocess.run(
        snakemake_command(workdir, *arguments), env=env, cwd=workdir, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(arguments)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def run_id_of(output: str) -> str:
    """Return the SLURM run id that the executor plugin prints at the start of a run."""
    match = re.search(r"SLURM run ID: ([0-9a-f-]+)", output)
    if match is None:
        raise AssertionError(f"no 'SLURM run ID' in the Snakemake output:\n{output}")
    return match.group(1)


def submitted_job_ids(slurmctld_log: Path) -> set[str]:
    """Return the ids of the batch jobs that slurmctld logged as submitted with sbatch."""
    text = slurmctld_log.read_text(errors="replace")
    return set(re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+) ", text))


def wait_for(condition: Callable[[], bool], *, timeout: float, description: str, interval: float = 0.2) -> None:
    """Poll ``condition`` every ``interval`` seconds until it is true; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {description}")
