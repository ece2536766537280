"""Invalid configs are rejected by a real ``snakemake -n`` before the DAG is built.

Each case changes one value of the small config and checks that Snakemake
stops while parsing the workflow, that its message names the field, the value
and what is allowed, and that no output was written.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers_faults import sample_subset
from imagebench.config import known_architectures
from workflow_runner import REPO, small_config, write_config

pytestmark = pytest.mark.slow

MODEL = "efficientnet_lite0"

# Dry runs at a time. Each is one Python process that parses the workflow.
_PARALLEL_RUNS = 2


@dataclass(frozen=True)
class BadConfig:
    """One invalid config: how to make it from the valid one, and what the error must contain."""

    name: str
    change: Callable[[dict[str, Any]], None] | None
    expected: tuple[str, ...]
    yaml_text: Callable[[dict[str, Any]], str] | None = None
    arguments: tuple[str, ...] = field(default=())


def _set(*path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(config: dict[str, Any]) -> None:
        target = config
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _duplicate_model(config: dict[str, Any]) -> str:
    text = yaml.safe_dump(config, sort_keys=False)
    duplicate = f"  {MODEL}:\n    architecture: resnet18\n    weights: {{timm: resnet18.a1_in1k}}\n"
    return text.replace("models:\n", "models:\n" + duplicate, 1)


def _without_root(config: dict[str, Any]) -> None:
    del config["datasets"]["sample"]["root"]


BAD_CONFIGS = [
    BadConfig(
        "unknown_architecture",
        _set("models", MODEL, "architecture", value="efficientnet_lite9"),
        (f"models.{MODEL}.architecture", "'efficientnet_lite9'", "timm.list_models()"),
    ),
    BadConfig(
        "unknown_source_scheme",
        _set("models", MODEL, "weights", value={"s3": "s3://bucket/lite0.pth", "sha256": "0" * 64}),
        (f"models.{MODEL}.weights", "'s3'", "allowed keys are file, filename, format, hf_hub, member, pypi"),
    ),
    BadConfig(
        "url_without_sha256",
        _set("models", MODEL, "weights", value={"url": "https://example.org/lite0.pth"}),
        (f"models.{MODEL}.weights", "'https://example.org/lite0.pth' has no sha256", "sha256: lock"),
    ),
    BadConfig(
        "malformed_sha256",
        _set("models", MODEL, "weights", "sha256", value="579344248a93"),
        (f"models.{MODEL}.weights.sha256", "'579344248a93'", "64 lowercase hex digits"),
    ),
    BadConfig(
        "sha256_read_as_number",
        _set("models", MODEL, "weights", "sha256", value=0),
        (f"models.{MODEL}.weights.sha256", "0 is not a sha256", "quote it in the YAML file"),
    ),
    BadConfig(
        "unknown_weights_format",
        _set("models", MODEL, "weights", "format", value="onnx"),
        (f"models.{MODEL}.weights.format", "'onnx'", "'timm', 'efficientnet_pytorch'"),
    ),
    BadConfig(
        "zero_shards",
        _set("datasets", "sample", "shards", value=0),
        ("datasets.sample.shards", "0 is out of range", "minimum is 1"),
    ),
    BadConfig(
        "duplicate_model_names",
        None,
        (f"duplicate key '{MODEL}'", "config.yaml at line", "unique name"),
        yaml_text=_duplicate_model,
    ),
    BadConfig(
        "unknown_layout",
        _set("datasets", "sample", "layout", value="flat"),
        ("datasets.sample.layout", "'flat'", "'synset-files', 'imagefolder', 'ilsvrc-val', 'imagenetv2'"),
    ),
    BadConfig(
        "missing_dataset_root",
        _set("datasets", "sample", "root", value="/nonexistent/imagenet/val"),
        ("datasets.sample.root", "'/nonexistent/imagenet/val'", "folder"),
    ),
    BadConfig(
        "missing_dataset_root_from_command_line",
        _without_root,
        ("dataset_root", "'/nonexistent/imagenet/val'", "folder"),
        arguments=("--config", "dataset_root=/nonexistent/imagenet/val"),
    ),
    BadConfig(
        "negative_batch_size",
        _set("evaluation", "batch_size", value=-8),
        ("evaluation.batch_size", "-8 is out of range", "minimum is 1"),
    ),
    BadConfig(
        "unknown_amp_dtype",
        _set("evaluation", "amp_dtype", value="float8"),
        ("evaluation.amp_dtype", "'float8'", "null, 'float16', 'bfloat16'"),
    ),
    BadConfig(
        "unknown_device",
        _set("evaluation", "device", value="tpu"),
        ("evaluation.device", "'tpu'", "auto|cpu|cuda", "use auto, cpu, cuda or cuda:N"),
    ),
    BadConfig(
        "negative_workers",
        _set("evaluation", "workers", value=-1),
        ("evaluation.workers", "-1 is out of range", "minimum is 0"),
    ),
    BadConfig(
        "misspelled_section",
        _set("evalution", value={"batch_size": 8}),
        ("(top level)", "'evalution'", "allowed keys are"),
    ),
    BadConfig(
        "unknown_published_model",
        _set("models", MODEL, "published_as", value="tf_efficientnet_lite0.in1kk"),
        (f"models.{MODEL}.published_as", "'tf_efficientnet_lite0.in1kk'", "tf_efficientnet_lite0.in1k"),
    ),
    BadConfig(
        "unknown_published_dataset",
        _set("datasets", "sample", "published_dataset", value="imagenet-vall"),
        ("datasets.sample.published_dataset", "'imagenet-vall'", "known: imagenet-val"),
    ),
    BadConfig(
        "model_name_with_slash",
        _set("models", "lite0/v2", value={"architecture": "tf_efficientnet_lite0", "weights": {"timm": "x"}}),
        ("models", "'lite0/v2'", "[A-Za-z0-9][A-Za-z0-9_.-]*"),
    ),
]


@dataclass(frozen=True)
class DryRun:
    workdir: Path
    returncode: int
    output: str


@pytest.fixture(scope="module")
def architecture_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file of timm's architecture names that a first run writes, so that no dry run imports timm."""
    cache = tmp_path_factory.mktemp("architecture-cache")
    known_architectures(cache_dir=cache)
    return cache


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory: pytest.TempPathFactory, architecture_cache: Path) -> dict[str, DryRun]:
    base = small_config(sample_subset(tmp_path_factory))

    def dry_run(case: BadConfig) -> DryRun:
        workdir = tmp_path_factory.mktemp(case.name)
        config = copy.deepcopy(base)
        if case.change is not None:
            case.change(config)
        write_config(workdir, config)
        if case.yaml_text is not None:
            (workdir / "config.yaml").write_text(case.yaml_text(config))
        _copy_cache(architecture_cache, workdir)
        command = [
            sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(workdir), "--dry-run", *case.arguments,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=workdir)
        return DryRun(workdir=workdir, returncode=result.returncode, output=result.stdout + result.stderr)

    with ThreadPoolExecutor(max_workers=_PARALLEL_RUNS) as pool:
        runs = list(pool.map(dry_run, BAD_CONFIGS))
    return {case.name: run for case, run in zip(BAD_CONFIGS, runs, strict=True)}


def _copy_cache(cache: Path, workdir: Path) -> None:
    target = workdir / "results" / ".cache"
    target.mkdir(parents=True)
    for path in cache.iterdir():
        (target / path.name).write_bytes(path.read_bytes())


def _case_params() -> list[Any]:
    return [pytest.param(case, id=case.name) for case in BAD_CONFIGS]


@pytest.mark.parametrize("case", _case_params())
def test_bad_config_rejected_before_jobs(dry_runs: dict[str, DryRun], case: BadConfig):
    run = dry_runs[case.name]
    assert run.returncode != 0, run.output
    assert "ConfigError" in run.output
    # Rejected while parsing, so no DAG was built and no job was planned.
    assert "Building DAG of jobs" not in run.output
    for text in case.expected:
        assert text in run.output, f"{text!r} missing from:\n{run.output}"
    assert [path.name for path in (run.workdir / "results").iterdir()] == [".cache"]


def test_valid_config_dry_run_plans_jobs(tmp_path_factory: pytest.TempPathFactory, architecture_cache: Path):
    # The cases above start from this config, so each fails by its one change only.
    workdir = tmp_path_factory.mktemp("valid-config")
    write_config(workdir, small_config(sample_subset(tmp_path_factory)))
    _copy_cache(architecture_cache, workdir)
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--dry-run",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "evaluate_shard" in result.stdout
