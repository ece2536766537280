"""Two uninterrupted runs of the same config on the same machine write the same files.

Every output has the same bytes, except logs, SVG figures, and the measured
throughput: its tables are compared without their measured columns, and the
figure drawn from it is not compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from polars.testing import assert_frame_equal

from helpers_faults import (
    final_files,
    outputs_differing_from,
    read_leaderboard_numbers,
    read_predictions,
    reference_run,
    run_snakemake,
)
from imagebench.io import read_parquet_metadata
from workflow_runner import write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def second_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reference = reference_run(tmp_path_factory)
    workdir = tmp_path_factory.mktemp("second-run")
    write_config(workdir, reference.config)
    result = run_snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.output
    return workdir


def test_second_run_same_predictions(tmp_path_factory: pytest.TempPathFactory, second_run: Path):
    reference = reference_run(tmp_path_factory)
    assert_frame_equal(read_predictions(second_run), read_predictions(reference.workdir))
    assert_frame_equal(read_leaderboard_numbers(second_run), read_leaderboard_numbers(reference.workdir))


def test_second_run_same_outputs(tmp_path_factory: pytest.TempPathFactory, second_run: Path):
    reference = reference_run(tmp_path_factory)
    assert final_files(second_run) == final_files(reference.workdir)
    assert outputs_differing_from(second_run, reference.workdir) == []


def test_prediction_footer_run_record_same(tmp_path_factory: pytest.TempPathFactory, second_run: Path):
    reference = reference_run(tmp_path_factory)
    shards = sorted((second_run / "results" / "predictions").rglob("*.parquet"))
    assert len(shards) == 2
    for shard in shards:
        reference_shard = reference.workdir / shard.relative_to(second_run)
        record = json.loads(read_parquet_metadata(shard)["imagebench.run"])
        assert record == json.loads(read_parquet_metadata(reference_shard)["imagebench.run"])


def test_second_run_same_svg_bytes(tmp_path_factory: pytest.TempPathFactory, second_run: Path):
    reference = reference_run(tmp_path_factory)
    svg = Path("results") / "figures" / "accuracy.svg"
    assert (second_run / svg).read_bytes() == (reference.workdir / svg).read_bytes()
