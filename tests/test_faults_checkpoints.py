"""Hostile and broken checkpoints through the real workflow, next to one good model.

One run with ``--keep-going`` contains the good lite0 weights and one model per
kind of bad weights file, each given as a ``file:`` source. Every bad model
must fail in its own job with a message that names the model, the file and
the fix, no pickled code may run, and the good model's predictions must be
the same as in a run without the bad models.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from polars.testing import assert_frame_equal
from safetensors.torch import load_file, save_file

from helpers_checkpoints import lite0_raw_weights, write_hostile
from helpers_faults import fault_config, lite0_file_model, read_predictions, reference_run, run_snakemake
from workflow_runner import write_config

pytestmark = pytest.mark.slow

GOOD = "efficientnet_lite0"


@dataclass(frozen=True)
class BadCheckpoint:
    """A model whose weights file is bad: the job that must reject it, and what its message must contain."""

    model: str
    rule: str
    reason: str
    fix: str


BAD_CHECKPOINTS = [
    BadCheckpoint("bare_pickle", "convert_checkpoint", "refusing to unpickle code", "Use one of those"),
    BadCheckpoint(
        "zip_pickle", "convert_checkpoint", "refusing to unpickle code", "Use a checkpoint that contains tensors only"
    ),
    BadCheckpoint("truncated", "convert_checkpoint", "truncated or damaged", "Fetch it again (delete the file and rerun)"),
    BadCheckpoint(
        "sha256_mismatch", "download_weights", "sha256 mismatch", "put the new sha256 into the model's weights: mapping"
    ),
    BadCheckpoint(
        "mismatched_keys",
        "convert_checkpoint",
        "1 missing keys (conv_head.weight); 1 unexpected keys (classifier.extra); "
        "1 wrong shapes (classifier.weight: (10, 1280) instead of (1000, 1280))",
        "Check the model's architecture: value",
    ),
    BadCheckpoint("lying_header", "convert_checkpoint", "is invalid", "Fetch it again"),
]

# The message of a key or shape mismatch names the model and the architecture but not the file.
@dataclass(frozen=True)
class KeepGoingRun:
    workdir: Path
    output: str
    returncode: int
    markers: list[Path]


@pytest.fixture(scope="module")
def keep_going_run(tmp_path_factory: pytest.TempPathFactory) -> KeepGoingRun:
    folder = tmp_path_factory.mktemp("bad-weights")
    markers = [folder / "bare-pickle-ran", folder / "zip-pickle-ran"]
    files = _write_bad_weights(folder, tmp_path_factory, markers=markers)

    models = {GOOD: lite0_file_model(tmp_path_factory)}
    for bad in BAD_CHECKPOINTS:
        path, sha256, weights_format = files[bad.model]
        models[bad.model] = {
            "architecture": "tf_efficientnet_lite0",
            "weights": {"file": str(path), "sha256": sha256, "format": weights_format},
        }
    workdir = tmp_path_factory.mktemp("keep-going")
    write_config(workdir, fault_config(tmp_path_factory, models=models))
    result = run_snakemake(workdir, "--cores", "2", "--keep-going")
    return KeepGoingRun(workdir=workdir, output=result.output, returncode=result.returncode, markers=markers)


def _write_bad_weights(
    folder: Path, factory: pytest.TempPathFactory, *, markers: list[Path]
) -> dict[str, tuple[Path, str, str]]:
    """Write one bad weights file per BAD_CHECKPOINTS entry.

    Returns {model: (path, sha256 for the config, weights format)}.
    """
    raw_path, _ = lite0_raw_weights(factory)
    converted_path = reference_run(factory).workdir / "results" / "checkpoints" / "efficientnet_lite0.safetensors"
    timm_state_dict = load_file(converted_path)

    paths = {name: folder / f"{name}.weights" for name in (bad.model for bad in BAD_CHECKPOINTS)}
    write_hostile(paths["bare_pickle"], markers[0], kind="bare")
    write_hostile(paths["zip_pickle"], markers[1], kind="zip")
    raw = raw_path.read_bytes()
    paths["truncated"].write_bytes(raw[: len(raw) // 2])
    paths["sha256_mismatch"].write_bytes(raw)

    mismatched = {key: value for key, value in timm_state_dict.items() if key != "conv_head.weight"}
    mismatched.update({"classifier.extra": torch.zeros(3), "classifier.weight": torch.zeros(10, 1280)})
    save_file(mismatched, str(paths["mismatched_keys"]))
    paths["lying_header"].write_bytes(_with_lying_header(converted_path.read_bytes(), key="classifier.weight"))

    formats = {name: "timm" for name in paths}
    formats["truncated"] = formats["sha256_mismatch"] = "efficientnet_pytorch"
    files = {name: (path, _sha256(path.read_bytes()), formats[name]) for name, path in paths.items()}
    wrong = _sha256(b"not the weights")
    files["sha256_mismatch"] = (paths["sha256_mismatch"], wrong, "efficientnet_pytorch")
    return files


def _with_lying_header(data: bytes, *, key: str) -> bytes:
    """Return a safetensors file whose header gives ``key`` twice the rows that its byte range holds."""
    (header_size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_size])
    header[key]["shape"][0] *= 2
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + data[8 + header_size :]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _job_log(run: KeepGoingRun, bad: BadCheckpoint) -> str:
    return (run.workdir / "results" / "logs" / bad.rule / f"{bad.model}.log").read_text()


def test_pickled_code_never_runs(keep_going_run: KeepGoingRun):
    for marker in keep_going_run.markers:
        assert not marker.exists(), marker


def test_run_fails_and_lists_each_bad_model(keep_going_run: KeepGoingRun):
    assert keep_going_run.returncode != 0
    for bad in BAD_CHECKPOINTS:
        assert f"Error in rule {bad.rule}" in keep_going_run.output
        assert f"results/logs/{bad.rule}/{bad.model}.log" in keep_going_run.output, bad.model


@pytest.mark.parametrize("bad", BAD_CHECKPOINTS, ids=lambda bad: bad.model)
def test_bad_checkpoint_rejected_with_reason_and_fix(keep_going_run: KeepGoingRun, bad: BadCheckpoint):
    log = _job_log(keep_going_run, bad)
    assert f"model '{bad.model}'" in log
    assert bad.reason in log
    assert bad.fix in log
    results = keep_going_run.workdir / "results"
    assert not (results / "checkpoints" / f"{bad.model}.safetensors").exists()
    assert not (results / "predictions" / "sample" / bad.model).exists()


@pytest.mark.parametrize(
    "bad",
    BAD_CHECKPOINTS,
    ids=lambda bad: bad.model,
)
def test_bad_checkpoint_message_names_file(keep_going_run: KeepGoingRun, bad: BadCheckpoint):
    log = _job_log(keep_going_run, bad)
    message = next(line for line in log.splitlines() if f"model '{bad.model}'" in line)
    assert f"{bad.model}.weights" in message


def test_sha256_mismatch_never_saved(keep_going_run: KeepGoingRun):
    downloads = keep_going_run.workdir / "results" / "downloads"
    assert not (downloads / "sha256_mismatch.weights").exists()
    assert list(downloads.glob(".sha256_mismatch.weights.*")) == []


def test_good_model_unaffected(tmp_path_factory: pytest.TempPathFactory, keep_going_run: KeepGoingRun):
    reference = reference_run(tmp_path_factory)
    predictions = read_predictions(keep_going_run.workdir)
    assert predictions["model"].unique().to_list() == [GOOD]
    assert_frame_equal(predictions, read_predictions(reference.workdir))
