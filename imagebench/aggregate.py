"""Leaderboard: top-1 and top-5 per (dataset, model) from all prediction shards."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from imagebench.errors import ImagebenchError
from imagebench.predictions import read_prediction_metadata
from imagebench.io import atomic_path, write_parquet_atomic, write_text_atomic
from imagebench.stats import wilson_interval

_LOGGER = logging.getLogger(__name__)

LEADERBOARD_COLUMNS = [
    "dataset", "model", "base_model", "architecture", "images", "failed_images",
    "top1", "top1_low", "top1_high", "top5", "top5_low", "top5_high",
    "real_top1", "real_top1_low", "real_top1_high", "real_images", "valid", "invalid_reason",
    "param_count", "img_size", "pretrained_img_size", "crop_pct", "crop_mode", "interpolation", "mean", "std", "preprocessing",
    "checkpoint_sha256", "source_sha256", "device", "torch", "timm",
]


# A model scoring below this multiple of chance-level top-1 on at least
# MIN_IMAGES_FOR_CHANCE_CHECK images is far more likely to be fed wrong labels
# (a label-order mistake) than to be a trained ImageNet classifier, because
# even weak ImageNet models reach tens of percent top-1.
CHANCE_MULTIPLE = 10
MIN_IMAGES_FOR_CHANCE_CHECK = 50

LABEL_ORDER_CAUSES = (
    "labels read in folder sort order instead of timm's ImageNet class order; "
    "devkit class ids used as class indices (or shifted by one); "
    "ImageNetV2 folders sorted as strings; "
    "a checkpoint whose classifier uses another class order or another preprocessing (channel order, mean/std)"
)


PUBLISHED_LEGEND = (
    "vs published: measured minus published accuracy in percentage points. "
    "(outside 95% CI) marks a published value that lies outside the measured 95% interval, and "
    "(other preprocessing) a published number measured with another img_size, crop_pct or interpolation."
)


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


def join_throughput(leaderboard: pl.DataFrame, throughput: pl.DataFrame) -> pl.DataFrame:
    """Add the throughput summary's columns to the leaderboard rows of the same model.

    Rows of a test-resolution sweep or of a model without measurements get nulls.
    """
    return leaderboard.join(throughput, on="model", how="left", maintain_order="left")


def write_leaderboard(frame: pl.DataFrame, *, parquet: Path, csv: Path, markdown: Path) -> None:
    write_parquet_atomic(frame, parquet)
    with atomic_path(csv) as temporary:
        frame.write_csv(temporary)
    write_text_atomic(markdown, leaderboard_markdown(frame))


def leaderboard_markdown(frame: pl.DataFrame) -> str:
    """Render the headline columns as a Markdown table, accuracies in percent with their 95% interval.

    Measured throughput adds a column per device type: the images per second of the fastest
    valid setting, with the setting's name. When a row has a published counterpart (the columns that
    ``imagebench.published.compare_with_published`` adds), the table also shows the published
    model and the measured minus published difference, marked when the published value lies
    outside the measured 95% interval. Without any such row those columns are left out.
    """
    headline = frame.select(
        "dataset",
        "model",
        pl.col("images"),
        pl.col("failed_images").alias("failed"),
        _unless_invalid(_interval_text("top1")).alias("top-1 % (95% CI)"),
        _unless_invalid(_interval_text("top5")).alias("top-5 % (95% CI)"),
        (pl.col("param_count") / 1e6).round(2).alias("params (M)"),
        pl.col("img_size"),
        pl.col("crop_pct"),
        pl.col("interpolation"),
    )
    throughput = _throughput_columns(frame)
    if throughput:
        headline = headline.with_columns(throughput)
    published = _published_columns(frame)
    if published:
        headline = headline.with_columns(published)

    with pl.Config(
        tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True,
        tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=200, tbl_width_chars=1000,
    ):
        table = str(headline)
    legend = f"\n\n{PUBLISHED_LEGEND}" if published else ""
    notes = [
        f"- {row['dataset']} / {row['model']}: {row['invalid_reason']}"
        for row in frame.filter(~pl.col("valid")).iter_rows(named=True)
    ]
    invalid = "\n\nInvalid rows, not published:\n\n" + "\n".join(notes) if notes else ""
    return "# Leaderboard\n\n" + table + legend + invalid + "\n"


def _throughput_columns(frame: pl.DataFrame) -> list[pl.Series]:
    """Return a Markdown column per device type that has a measurement: images/s of the fastest valid setting."""
    columns = []
    for device_type in ("cpu", "cuda"):
        speed, setting = f"{device_type}_images_per_second", f"{device_type}_setting"
        if speed not in frame.columns or frame[speed].is_null().all():
            continue
        # Empty strings rather than nulls, because polars prints a null as the word "null".
        cells = [
            "" if value is None else f"{value:.1f} ({name})" for value, name in zip(frame[speed], frame[setting])
        ]
        columns.append(pl.Series(f"{device_type} images/s (setting)", cells, dtype=pl.String))
    return columns


def _published_columns(frame: pl.DataFrame) -> list[pl.Series]:
    """Return the Markdown columns of the published comparison, or none when no row has a published counterpart."""
    if "published_model" not in frame.columns or frame["published_model"].is_null().all():
        return []

    # Empty strings rather than nulls, because polars prints a null as the word "null".
    names = [
        _published_model_text(model, matches)
        for model, matches in zip(frame["published_model"], frame["preprocessing_matches"])
    ]
    columns = [pl.Series("published model", names, dtype=pl.String)]
    for metric, label in (("top1", "top-1"), ("top5", "top-5")):
        if frame[f"{metric}_diff"].is_null().all():
            continue
        cells = [
            _difference_text(difference, outside)
            for difference, outside in zip(frame[f"{metric}_diff"], frame[f"{metric}_outside_ci"])
        ]
        columns.append(pl.Series(f"vs published {label} (pp)", cells, dtype=pl.String))
    return columns


def _published_model_text(model: str | None, preprocessing_matches: bool | None) -> str:
    if model is None:
        return ""
    return f"{model} (other preprocessing)" if preprocessing_matches is False else model


def _difference_text(difference: float | None, outside_ci: bool | None) -> str:
    if difference is None:
        return ""
    text = f"{difference:+.2f}"
    return f"{text} (outside 95% CI)" if outside_ci else text


def _unless_invalid(text: pl.Expr) -> pl.Expr:
    return pl.when(pl.col("valid")).then(text).otherwise(pl.lit("invalid, see below"))


def _interval_text(metric: str) -> pl.Expr:
    return pl.format(
        "{} ({}–{})",
        pl.col(metric).round(2),
        pl.col(f"{metric}_low").round(2),
        pl.col(f"{metric}_high").round(2),
    )


def _count_correct(predictions: Sequence[Path]) -> pl.DataFrame:
    """Count images and correct predictions per (dataset, model), one lazy scan per dataset.

    Datasets are scanned separately because only some carry ImageNet-ReaL
    labels, so their files have different schemas.
    """
    by_dataset: dict[str, list[str]] = {}
    for path in predictions:
        by_dataset.setdefault(Path(path).parent.parent.name, []).append(str(path))

    counts = [_count_dataset(pl.scan_parquet(paths)) for paths in by_dataset.values()]
    return pl.concat(counts, how="diagonal_relaxed").sort("dataset", "model")


def _count_dataset(scan: pl.LazyFrame) -> pl.DataFrame:
    aggregations = [
        pl.len().alias("images"),
        (pl.col("status") != "ok").sum().alias("failed_images"),
        pl.col("correct_top1").sum().alias("top1_correct"),
        pl.col("correct_top5").sum().alias("top5_correct"),
    ]
    if "real_labels" in scan.collect_schema().names():
        # ImageNet-ReaL: a top-1 prediction is right when it is one of the
        # image's labels. Images with an empty label list are left out of both
        # the numerator and the denominator, and failed images count as wrong.
        has_labels = pl.col("real_labels").list.len() > 0
        top1_in_labels = pl.col("real_labels").list.contains(pl.col("top5_indices").list.first())
        aggregations += [
            has_labels.sum().alias("real_images"),
            (has_labels & top1_in_labels.fill_null(False)).sum().alias("real_correct"),
        ]
    return scan.group_by("dataset", "model").agg(aggregations).collect()


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

    top1 = counts["top1_correct"] / images
    valid, invalid_reason = _check_above_chance(top1, images=images, num_classes=_num_classes(details))
    real = _real_accuracy(counts)

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
        **real,
        "valid": valid,
        "invalid_reason": invalid_reason,
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


def _num_classes(details: dict[str, Any]) -> int:
    class_mask = details.get("class_mask")
    return len(class_mask) if class_mask else 1000


def _check_above_chance(top1: float, *, images: int, num_classes: int) -> tuple[bool, str | None]:
    """Flag a top-1 near chance level as a probable label-order error."""
    chance = 1.0 / num_classes
    if images < MIN_IMAGES_FOR_CHANCE_CHECK or top1 >= CHANCE_MULTIPLE * chance:
        return True, None
    reason = (
        f"top-1 {100 * top1:.2f}% on {images} images is below {CHANCE_MULTIPLE}x chance "
        f"({100 * chance:.2f}% for {num_classes} classes): probable label-order error. Likely causes: "
        f"{LABEL_ORDER_CAUSES}"
    )
    _LOGGER.warning(reason)
    return False, reason


def _real_accuracy(counts: dict[str, Any]) -> dict[str, Any]:
    real_images = counts.get("real_images")
    if not real_images:
        return {"real_top1": None, "real_top1_low": None, "real_top1_high": None, "real_images": real_images}
    low, high = wilson_interval(counts["real_correct"], real_images)
    return {
        "real_top1": _percent(counts["real_correct"] / real_images),
        "real_top1_low": _percent(low),
        "real_top1_high": _percent(high),
        "real_images": real_images,
    }


def _percent(fraction: float) -> float:
    return round(100.0 * fraction, 3)
