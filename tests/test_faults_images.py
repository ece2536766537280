"""Malformed images through the real workflow, and a file whose decoding hangs.

Every file of helpers_faults.write_malformed_images is either decoded or
recorded as failed with its reason, and none stops its shard. A file that blocks
on open is timed out in the DataLoader worker rather than stalling the shard.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import timm

from helpers import write_synset_manifest
from helpers_faults import (
    SAMPLE_DIR,
    TIGER_SHARK,
    MalformedImage,
    fault_config,
    fifo_released_after,
    prepared_workdir,
    read_predictions,
    reference_run,
    run_snakemake,
    write_malformed_images,
)
from imagebench import images
from imagebench.evaluate import EvaluationSettings, evaluate_shard

pytestmark = pytest.mark.slow

FIFO_NAME = "n01491361_fifo.JPEG"


@dataclass(frozen=True)
class MalformedRun:
    workdir: Path
    kinds: list[MalformedImage]


@pytest.fixture(scope="module")
def malformed_run(tmp_path_factory: pytest.TempPathFactory, bad_images_dir: Path) -> MalformedRun:
    folder = tmp_path_factory.mktemp("malformed-images")
    kinds = write_malformed_images(folder, bad_images_dir=bad_images_dir)
    # No writer ever opens this FIFO, so reading it would block until the
    # decode timeout. build_manifest lists regular files only and skips it.
    os.mkfifo(folder / FIFO_NAME)

    reference = reference_run(tmp_path_factory)
    config = fault_config(tmp_path_factory)
    config["datasets"]["sample"]["root"] = str(folder)
    workdir = prepared_workdir(reference, tmp_path_factory.mktemp("malformed-run"), config=config, manifest=False)
    result = run_snakemake(workdir, "--cores", "2", "results/leaderboard.parquet", timeout_s=300)
    assert result.returncode == 0, result.output
    return MalformedRun(workdir=workdir, kinds=kinds)


def test_every_malformed_image_recorded(malformed_run: MalformedRun):
    predictions = read_predictions(malformed_run.workdir)
    by_path = {row["path"]: row for row in predictions.iter_rows(named=True)}
    assert sorted(by_path) == sorted(kind.name for kind in malformed_run.kinds)
    for kind in malformed_run.kinds:
        row = by_path[kind.name]
        if kind.decodes:
            assert row["status"] == "ok", f"{kind.name}: {row['error']}"
            assert len(row["top5_indices"]) == 5, kind.name
        else:
            assert row["status"] == "failed", kind.name
            assert kind.reason in row["error"], kind.name
            assert row["top5_indices"] is None, kind.name


def test_twins_get_same_predictions(malformed_run: MalformedRun):
    predictions = read_predictions(malformed_run.workdir)
    by_path = {row["path"]: row for row in predictions.iter_rows(named=True)}
    for kind in (kind for kind in malformed_run.kinds if kind.twin):
        assert by_path[kind.name]["top5_indices"] == by_path[kind.twin]["top5_indices"], kind.name
        assert by_path[kind.name]["top5_probs"] == by_path[kind.twin]["top5_probs"], kind.name


def test_leaderboard_counts_failed_images(malformed_run: MalformedRun):
    leaderboard = pl.read_parquet(malformed_run.workdir / "results" / "leaderboard.parquet")
    row = leaderboard.row(0, named=True)
    assert row["images"] == len(malformed_run.kinds)
    assert row["failed_images"] == sum(not kind.decodes for kind in malformed_run.kinds)


def test_fifo_in_dataset_folder_reported(malformed_run: MalformedRun):
    log = (malformed_run.workdir / "results" / "logs" / "build_manifest" / "sample.log").read_text()
    assert FIFO_NAME in log


@pytest.mark.parametrize("workers", [0, 1])
def test_hanging_image_times_out_in_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int):
    root = tmp_path / "images"
    root.mkdir()
    for name in (TIGER_SHARK, "n01440764_tench.JPEG"):
        (root / name).symlink_to((SAMPLE_DIR / name).resolve())
    # Read when the worker decodes, after the DataLoader forked it.
    monkeypatch.setattr(images, "DECODE_TIMEOUT_S", 1.0)
    manifest = tmp_path / "manifest.parquet"
    output = tmp_path / "predictions.parquet"

    with fifo_released_after(root / FIFO_NAME, 120):
        write_synset_manifest(root, manifest, num_shards=1)
        predictions = evaluate_shard(
            manifest_path=manifest,
            dataset_root=root,
            shard=0,
            num_shards=1,
            dataset="sample",
            model_name="random_lite0",
            model=timm.create_model("tf_efficientnet_lite0", pretrained=False),
            checkpoint_sha256="0" * 64,
            output=output,
            settings=EvaluationSettings(device="cpu", batch_size=2, workers=workers, threads=1),
        )

    statuses = dict(zip(predictions["path"], predictions["status"], strict=True))
    assert statuses == {FIFO_NAME: "failed", TIGER_SHARK: "ok", "n01440764_tench.JPEG": "ok"}
    error = predictions.filter(pl.col("path") == FIFO_NAME)["error"].item()
    assert error.startswith("DecodeTimeoutError: decoding timed out after 1 s")
