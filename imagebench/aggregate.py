"""Leaderboard: top-1 and top-5 per (dataset, model) from all prediction shards."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from imagebench.errors import ImagebenchError
from imagebench.evaluate import read_prediction_metadata
from imagebench.io import atomic_path, write_parquet_atomic, write_text_atomic
from imagebench.stats import wilson_interval

_LOGGER = logging.getLogger(__name__)

LEADERBOARD_COLUMNS = [
    "dataset", "model", "base_model", "architecture", "images", "failed_images",
    "top1", "top1_low", "top1_high", "top5", "top5_low", "top5_high",
    "param_count", "img_size", "pretrained_img_size", "crop_pct", "crop_mode", "interpolation", "mean", "std", "preprocessing",
    "checkpoint_sha256", "source_sha256", "device", "torch", "timm",
]


class IncompletePredictionsError(ImagebenchError):
    """The prediction shards of a model do not cover its dataset's manifest exactly."""


def build_leaderboard(
    *,
    predictions: Sequence[Path],
    manifests: dict[str, Path],
    provenances: dict[str, Path],
) -> pl.DataFrame:
    """Aggregate prediction shards into one leaderboard row per (dataset, model).

    Failed images count as wrong in top-1 and top-5, so an undecodable file
    lowers the accuracy instead of silently shrinking the denominator.
    """
    if not predictions:
        raise ImagebenchError("no prediction files to aggregate; check that config.yaml lists models and datasets")

    counts = _count_correct(predictions)
    _check_complete(predictions, manifests)
    details = _describe_runs(predictions, provenances)

    rows = []
    for record in counts.iter_rows(named=True):
        rows.append(_leaderboard_row(record, details[(record["dataset"], record["model"])]))
    frame = pl.DataFrame(rows).select(LEADERBOARD_COLUMNS)
    return frame.sort(["dataset", "top1", "model"], descending=[False, True, False])


def write_leaderboard(frame: pl.DataFrame, *, parquet: Path, csv: Path, markdown: Path) -> None:
    write_parquet_atomic(frame, parquet)
    with atomic_path(csv) as temporary:
        frame.write_csv(temporary)
    write_text_atomic(markdown, leaderboard_markdown(frame))


def leaderboard_markdown(frame: pl.DataFrame) -> str:
    """Render the headline columns as a Markdown table, accuracies in percent with their 95% interval."""
    shown = frame.select(
        "dataset",
        "model",
        pl.col("images"),
        pl.col("failed_images").alias("failed"),
        _interval_text("top1").alias("top-1 % (95% CI)"),
        _interval_text("top5").alias("top-5 % (95% CI)"),
        (pl.col("param_count") / 1e6).round(2).alias("params (M)"),
        pl.col("img_size"),
        pl.col("crop_pct"),
        pl.col("interpolation"),
    )
    with pl.Config(
        tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True,
        tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=200, tbl_width_chars=1000,
    ):
        table = str(shown)
    return "# Leaderboard\n\n" + table + "\n"


def _interval_text(metric: str) -> pl.Expr:
    return pl.format(
        "{} ({}–{})",
        pl.col(metric).round(2),
        pl.col(f"{metric}_low").round(2),
        pl.col(f"{metric}_high").round(2),
    )


def _count_correct(predictions: Sequence[Path]) -> pl.DataFrame:
    scan = pl.scan_parquet([str(path) for path in predictions])
    return (
        scan.group_by("dataset", "model")
        .agg(
            pl.len().alias("images"),
            (pl.col("status") != "ok").sum().alias("failed_images"),
            pl.col("correct_top1").sum().alias("top1_correct"),
            pl.col("correct_top5").sum().alias("top5_correct"),
        )
        .sort("dataset", "model")
        .collect()
    )


def _check_complete(predictions: Sequence[Path], manifests: dict[str, Path]) -> None:
    """Raise when a model's shards miss, repeat or add images relative to the manifest."""
    scanned = pl.scan_parquet([str(path) for path in predictions]).select("dataset", "model", "image_id")
    for (dataset, model), group in scanned.collect().group_by("dataset", "model"):
        expected = pl.scan_parquet(manifests[dataset]).select("image_id").collect()
        duplicated = group.filter(pl.col("image_id").is_duplicated())
        missing = expected.join(group, on="image_id", how="anti")
        extra = group.join(expected, on="image_id", how="anti")
        if duplicated.height or missing.height or extra.height:
            raise IncompletePredictionsError(
                f"predictions of model {model!r} on dataset {dataset!r} do not match its manifest "
                f"{manifests[dataset]}: {missing.height} missing, {extra.height} unexpected, "
                f"{duplicated.height} duplicated image ids (first missing: {missing['image_id'].head(3).to_list()}); "
                "delete that model's prediction folder and rerun snakemake"
            )


def _describe_runs(predictions: Sequence[Path], provenances: dict[str, Path]) -> dict[tuple[str, str], dict]:
    details: dict[tuple[str, str], dict[str, Any]] = {}
    for path in predictions:
        record = read_prediction_metadata(path)
        key = (record["dataset"], record["model"])
        previous = details.get(key)
        if previous is not None and previous["preprocessing"] != record["preprocessing"]:
            raise ImagebenchError(f"shards of {key} were evaluated with different preprocessing; rerun that model")
        details[key] = record

    for (dataset, model), record in details.items():
        provenance_path = provenances.get(model)
        record["provenance"] = json.loads(Path(provenance_path).read_text()) if provenance_path else {}
    return details


def _leaderboard_row(counts: dict[str, Any], details: dict[str, Any]) -> dict[str, Any]:
    images = counts["images"]
    top1_low, top1_high = wilson_interval(counts["top1_correct"], images)
    top5_low, top5_high = wilson_interval(counts["top5_correct"], images)
    preprocessing = details["preprocessing"]
    provenance = details["provenance"]

    return {
        "dataset": counts["dataset"],
        "model": counts["model"],
        "base_model": provenance.get("model"),
        "architecture": provenance.get("architecture"),
        "images": images,
        "failed_images": counts["failed_images"],
        "top1": _percent(counts["top1_correct"] / images),
        "top1_low": _percent(top1_low),
        "top1_high": _percent(top1_high),
        "top5": _percent(counts["top5_correct"] / images),
        "top5_low": _percent(top5_low),
        "top5_high": _percent(top5_high),
        "param_count": provenance.get("param_count"),
        "img_size": preprocessing["img_size"],
        "pretrained_img_size": details["pretrained_preprocessing"]["img_size"],
        "crop_pct": preprocessing["crop_pct"],
        "crop_mode": preprocessing["crop_mode"],
        "interpolation": preprocessing["interpolation"],
        "mean": json.dumps(preprocessing["mean"]),
        "std": json.dumps(preprocessing["std"]),
        "preprocessing": json.dumps(preprocessing, sort_keys=True),
        "checkpoint_sha256": details["checkpoint_sha256"],
        "source_sha256": provenance.get("raw_sha256"),
        "device": details["run"].get("device_name"),
        "torch": details["versions"]["torch"],
        "timm": details["versions"]["timm"],
    }


def _percent(fraction: float) -> float:
    return round(100.0 * fraction, 3)
