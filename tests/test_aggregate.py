import json
from pathlib import Path

import polars as pl
import pytest

from conftest import sample_files
from helpers import write_synset_manifest
from imagebench.aggregate import (
    IncompletePredictionsError, build_leaderboard, join_throughput, leaderboard_markdown, write_leaderboard,
)  # fmt: skip
from imagebench.evaluate import EvaluationSettings, evaluate_shard
from imagebench.io import read_parquet_metadata, write_parquet_atomic
from imagebench.published import (
    COMPARISON_COLUMNS,
    DEFAULT_TABLE,
    compare_with_published,
    published_schema,
    read_published,
    validate_published,
)
from imagebench.throughput import summary_schema


def _provenance(tmp_path: Path, record: dict) -> Path:
    path = tmp_path / "provenance.json"
    path.write_text(json.dumps(record))
    return path


def _evaluate_all(model, root: Path, manifest: Path, folder: Path, *, num_shards: int, name: str) -> list[Path]:
    outputs = []
    for shard in range(num_shards):
        output = folder / "predictions" / "sample" / name / f"shard-{shard}-of-{num_shards}.parquet"
        evaluate_shard(
            manifest_path=manifest, dataset_root=root, shard=shard, num_shards=num_shards, dataset="sample",
            model_name=name, model=model, checkpoint_sha256="a" * 64, output=output,
            settings=EvaluationSettings(batch_size=16, workers=1),
        )
        outputs.append(output)
    return outputs


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, sample_dir, lite0_model, lite0_checkpoint):
    folder = tmp_path_factory.mktemp("aggregate")
    root = folder / "images"
    root.mkdir()
    for source in sample_files(sample_dir, 60):
        (root / source.name).symlink_to(source)
    manifest = folder / "manifest.parquet"
    write_synset_manifest(root, manifest, num_shards=2)
    predictions = _evaluate_all(lite0_model, root, manifest, folder, num_shards=2, name="lite0")
    _, record = lite0_checkpoint
    return {"folder": folder, "root": root, "manifest": manifest, "predictions": predictions, "provenance": record}


def test_leaderboard_counts_and_intervals(evaluated, tmp_path):
    frame = build_leaderboard(
        predictions=evaluated["predictions"],
        manifests={"sample": evaluated["manifest"]},
        provenances={"lite0": _provenance(tmp_path, evaluated["provenance"])},
    )
    row = frame.row(0, named=True)
    predictions = pl.read_parquet(evaluated["predictions"])
    assert row["images"] == 60
    assert row["top1"] == pytest.approx(100 * predictions["correct_top1"].mean(), abs=1e-3)
    assert row["top5"] == pytest.approx(100 * predictions["correct_top5"].mean(), abs=1e-3)
    assert row["top1_low"] < row["top1"] < row["top1_high"]
    assert row["valid"] is True
    assert row["real_top1"] is None
    assert row["param_count"] == 4_652_008
    assert row["pretrained_img_size"] == 224
    assert json.loads(row["preprocessing"])["channel_order"] == "RGB"


def test_failed_images_count_as_wrong(evaluated, tmp_path):
    # Mark two images of one shard as failed and check the denominator keeps them.
    shard = pl.read_parquet(evaluated["predictions"][0])
    metadata = read_parquet_metadata(evaluated["predictions"][0])
    broken = shard.with_columns(
        pl.when(pl.int_range(pl.len()) < 2).then(pl.lit("failed")).otherwise(pl.col("status")).alias("status"),
        pl.when(pl.int_range(pl.len()) < 2).then(False).otherwise(pl.col("correct_top1")).alias("correct_top1"),
    )
    path = tmp_path / "predictions" / "sample" / "lite0" / "shard-0-of-2.parquet"
    write_parquet_atomic(broken, path, metadata=metadata)
    frame = build_leaderboard(
        predictions=[path, evaluated["predictions"][1]],
        manifests={"sample": evaluated["manifest"]},
        provenances={"lite0": _provenance(tmp_path, evaluated["provenance"])},
    )
    assert frame["images"][0] == 60
    assert frame["failed_images"][0] == 2


def test_missing_shard_rejected(evaluated, tmp_path):
    with pytest.raises(IncompletePredictionsError, match="30 missing"):
        build_leaderboard(
            predictions=evaluated["predictions"][:1],
            manifests={"sample": evaluated["manifest"]},
            provenances={"lite0": _provenance(tmp_path, evaluated["provenance"])},
        )


def test_shuffled_labels_flagged_invalid(evaluated, lite0_model, tmp_path):
    # A deliberately wrong class mapping: every label moved to the next image's class.
    manifest = pl.read_parquet(evaluated["manifest"])
    shuffled = manifest.with_columns(pl.col("label").shift(1, fill_value=manifest["label"][-1]))
    shuffled_path = tmp_path / "shuffled.parquet"
    write_parquet_atomic(shuffled, shuffled_path, metadata={"num_shards": "2"})
    predictions = _evaluate_all(lite0_model, evaluated["root"], shuffled_path, tmp_path, num_shards=2, name="lite0")

    frame = build_leaderboard(
        predictions=predictions,
        manifests={"sample": shuffled_path},
        provenances={"lite0": _provenance(tmp_path, evaluated["provenance"])},
    )
    row = frame.row(0, named=True)
    assert row["valid"] is False
    assert "probable label-order error" in row["invalid_reason"]
    assert "folder sort order" in row["invalid_reason"]
    assert "invalid, see below" in leaderboard_markdown(frame)


def test_real_labels_top1(evaluated, tmp_path):
    # ReaL-style labels: the first image gets an empty list (left out), the
    # second a list without its original label, the rest their own label.
    shards = [pl.read_parquet(path) for path in evaluated["predictions"]]
    paths = []
    for number, shard in enumerate(shards):
        real = [[int(label)] for label in shard["label"]]
        if number == 0:
            real[0] = []
            real[1] = [999 if shard["label"][1] != 999 else 998]
        frame = shard.with_columns(pl.Series("real_labels", real, dtype=pl.List(pl.Int32)))
        path = tmp_path / "predictions" / "sample" / "lite0" / f"shard-{number}-of-2.parquet"
        write_parquet_atomic(frame, path, metadata=read_parquet_metadata(evaluated["predictions"][number]))
        paths.append(path)

    row = build_leaderboard(
        predictions=paths,
        manifests={"sample": evaluated["manifest"]},
        provenances={"lite0": _provenance(tmp_path, evaluated["provenance"])},
    ).row(0, named=True)
    combined = pl.concat([pl.read_parquet(path) for path in paths])
    kept = combined.filter(pl.col("real_labels").list.len() > 0)
    expected = kept.select(
        pl.col("real_labels").list.contains(pl.col("top5_indices").list.first()).fill_null(False).mean()
    ).item()
    assert row["real_images"] == 59
    assert row["real_top1"] == pytest.approx(100 * expected, abs=1e-3)


def test_write_leaderboard_formats(evaluated, tmp_path):
    frame = build_leaderboard(
        predictions=evaluated["predictions"],
        manifests={"sample": evaluated["manifest"]},
        provenances={"lite0": _provenance(tmp_path, evaluated["provenance"])},
    )
    outputs = {"parquet": tmp_path / "lb.parquet", "csv": tmp_path / "lb.csv", "markdown": tmp_path / "lb.md"}
    write_leaderboard(frame, **outputs)
    assert pl.read_parquet(outputs["parquet"]).equals(frame)
    assert pl.read_csv(outputs["csv"]).height == 1
    markdown = outputs["markdown"].read_text()
    assert "| lite0" in markdown
    assert "top-1 % (95% CI)" in markdown
    assert "images/s" not in markdown


def test_markdown_shows_fastest_setting(evaluated, tmp_path):
    frame = build_leaderboard(
        predictions=evaluated["predictions"],
        manifests={"sample": evaluated["manifest"]},
        provenances={"lite0": _provenance(tmp_path, evaluated["provenance"])},
    )
    summary = pl.DataFrame(
        [{"model": "lite0", "cpu_images_per_second": 62.07, "cpu_setting": "cpu-fp32-b1"}], schema=summary_schema()
    )

    markdown = leaderboard_markdown(join_throughput(frame, summary))

    assert "cpu images/s (setting)" in markdown
    assert "62.1 (cpu-fp32-b1)" in markdown
    assert "cuda images/s" not in markdown


def _published_table(**overrides) -> pl.DataFrame:
    """A real published-results table: the repository's rows plus one for lite0 on the 60-image sample."""
    row = {
        "model": "tf_efficientnet_lite0.in1k", "top1": 50.0, "top5": 90.0, "img_size": 224, "crop_pct": 0.875,
        "interpolation": "bicubic", "dataset": "sample-60", "kind": "model", "weights_public": True,
        "source": "written by this test", "notes": "", **overrides,
    }  # fmt: skip
    table = pl.concat([read_published(DEFAULT_TABLE), pl.DataFrame([row], schema=published_schema())])
    validate_published(table, source="test table")
    return table


def _compared(frame: pl.DataFrame, published: pl.DataFrame, *, datasets: dict[str, str]) -> pl.DataFrame:
    return compare_with_published(
        frame, published, mapping={"lite0": "tf_efficientnet_lite0.in1k"}, datasets=datasets
    )


@pytest.fixture(scope="module")
def leaderboard(evaluated, tmp_path_factory) -> pl.DataFrame:
    folder = tmp_path_factory.mktemp("published")
    return build_leaderboard(
        predictions=evaluated["predictions"],
        manifests={"sample": evaluated["manifest"]},
        provenances={"lite0": _provenance(folder, evaluated["provenance"])},
    )


def test_published_inside_interval_not_flagged(leaderboard):
    measured = leaderboard.row(0, named=True)
    published = _published_table(top1=measured["top1"] - 1.0, top5=measured["top5"])

    row = _compared(leaderboard, published, datasets={"sample": "sample-60"}).row(0, named=True)

    assert row["published_model"] == "tf_efficientnet_lite0.in1k"
    assert row["top1_diff"] == pytest.approx(1.0)
    assert row["top1_outside_ci"] is False
    assert row["top5_diff"] == pytest.approx(0.0)
    assert row["top5_outside_ci"] is False
    assert row["preprocessing_matches"] is True


def test_published_outside_interval_flagged(leaderboard):
    measured = leaderboard.row(0, named=True)
    published = _published_table(top1=measured["top1_high"] + 2.0)

    row = _compared(leaderboard, published, datasets={"sample": "sample-60"}).row(0, named=True)

    assert row["top1_diff"] == pytest.approx(measured["top1"] - measured["top1_high"] - 2.0, abs=1e-3)
    assert row["top1_diff"] < 0
    assert row["top1_outside_ci"] is True


def test_sample_without_published_dataset_gets_nulls(leaderboard):
    compared = _compared(leaderboard, _published_table(), datasets={})

    assert compared.select(COMPARISON_COLUMNS).row(0) == (None,) * len(COMPARISON_COLUMNS)
    assert "vs published" not in leaderboard_markdown(compared)
    assert "published model" not in leaderboard_markdown(compared)


def test_markdown_marks_published_outside_interval(leaderboard):
    measured = leaderboard.row(0, named=True)
    published = _published_table(top1=measured["top1_high"] + 2.0, top5=None, img_size=260)
    # A second dataset of the same images without published_dataset: its cells stay empty.
    both = pl.concat([leaderboard, leaderboard.with_columns(pl.lit("sample-copy").alias("dataset"))])

    markdown = leaderboard_markdown(_compared(both, published, datasets={"sample": "sample-60"}))
    lines = markdown.splitlines()
    header = next(line for line in lines if line.startswith("| dataset"))
    compared_line = next(line for line in lines if line.startswith("| sample "))
    other_line = next(line for line in lines if line.startswith("| sample-copy"))
    difference = measured["top1"] - measured["top1_high"] - 2.0

    assert "vs published top-1 (pp)" in header
    assert "published model" in header
    # Every published top-5 is empty, so that column is left out.
    assert "vs published top-5" not in header
    assert f"{difference:+.2f} (outside 95% CI)" in compared_line
    assert "tf_efficientnet_lite0.in1k (other preprocessing)" in compared_line
    assert "outside" not in other_line
    assert "tf_efficientnet_lite0" not in other_line
    assert "null" not in markdown
    assert "measured minus published" in markdown


def test_markdown_difference_inside_interval_unmarked(leaderboard):
    measured = leaderboard.row(0, named=True)
    published = _published_table(top1=measured["top1"] - 1.0, top5=measured["top5"])

    markdown = leaderboard_markdown(_compared(leaderboard, published, datasets={"sample": "sample-60"}))
    line = next(line for line in markdown.splitlines() if line.startswith("| sample "))

    assert "+1.00" in line
    assert "+0.00" in line
    assert "outside" not in line
