"""Published ImageNet accuracies beside the measured leaderboard.

The table ``workflow/data/published_results.csv`` has one row per (model, dataset) with the
columns of timm's results CSV (model, top1, top5, img_size, crop_pct, interpolation) plus:

- ``dataset``: what the numbers were measured on, as an id such as ``imagenet-val`` (the
  50,000 ILSVRC 2012 validation images). A configured dataset declares the same id with
  ``published_dataset:``, and only then are its measured numbers compared with published ones.
- ``kind``: ``model``, or ``human`` for a human baseline that figures draw as a line.
- ``weights_public``: whether anyone can download the weights (empty for human rows).
- ``source``: the paper and table, or the repository file and commit, that gives the numbers.
- ``notes``: the setting, and whatever was not checked.

Rule aggregate runs ``compare_with_published`` on the leaderboard, so results/leaderboard.*
carry the ``COMPARISON_COLUMNS``. Snakemake imports this module while it parses the workflow,
so polars is imported inside the functions that need it.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagebench.errors import ConfigError

if TYPE_CHECKING:
    import polars as pl

_LOGGER = logging.getLogger(__name__)

# Absolute, so that a run in another working directory (snakemake --directory) finds it.
DEFAULT_TABLE = Path(__file__).resolve().parents[1] / "workflow" / "data" / "published_results.csv"

PUBLISHED_COLUMNS = (
    "model", "top1", "top5", "img_size", "crop_pct", "interpolation",
    "dataset", "kind", "weights_public", "source", "notes",
)  # fmt: skip
KINDS = ("model", "human")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos")
# Largest crop_pct in timm's results CSV is 1.15 (VOLO); 2 leaves room without allowing nonsense.
MAX_CROP_PCT = 2.0
_DATASET_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")

# Columns that compare_with_published adds to the leaderboard, in order.
COMPARISON_COLUMNS = (
    "published_model", "published_top1", "published_top5", "published_img_size", "published_crop_pct",
    "published_interpolation", "published_source", "preprocessing_matches",
    "top1_diff", "top5_diff", "top1_outside_ci", "top5_outside_ci",
)  # fmt: skip


def published_schema() -> dict[str, Any]:
    import polars as pl

    return {
        "model": pl.String,
        "top1": pl.Float64,
        "top5": pl.Float64,
        "img_size": pl.Int64,
        "crop_pct": pl.Float64,
        "interpolation": pl.String,
        "dataset": pl.String,
        "kind": pl.String,
        "weights_public": pl.Boolean,
        "source": pl.String,
        "notes": pl.String,
    }


def read_published(path: str | Path = DEFAULT_TABLE) -> pl.DataFrame:
    """Read the published-results table at ``path`` and check it; raise ConfigError listing every problem."""
    import polars as pl

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"published results table {path} not found; set published.table to an existing CSV file")

    header = path.read_text(encoding="utf-8").splitlines()[:1]
    columns = header[0].split(",") if header else []
    if tuple(columns) != PUBLISHED_COLUMNS:
        raise ConfigError(
            f"published results table {path} has the columns {columns}; expected exactly "
            f"{list(PUBLISHED_COLUMNS)} in that order"
        )
    try:
        frame = pl.read_csv(path, schema=published_schema())
    except pl.exceptions.ComputeError as error:
        raise ConfigError(f"published results table {path} cannot be parsed with its column types: {error}") from error

    validate_published(frame, source=str(path))
    return frame


def validate_published(frame: pl.DataFrame, *, source: str) -> None:
    """Raise ConfigError naming the row, column, value and what is allowed, for every invalid cell of ``frame``."""
    if tuple(frame.columns) != PUBLISHED_COLUMNS:
        raise ConfigError(f"{source}: columns are {frame.columns}; expected {list(PUBLISHED_COLUMNS)}")
    if frame.height == 0:
        raise ConfigError(f"{source}: the table has no rows")

    problems: list[str] = []
    for line, row in enumerate(frame.iter_rows(named=True), start=2):
        problems.extend(f"- line {line} ({row['model']!r}): {problem}" for problem in _row_problems(row))

    duplicated = frame.filter(frame.select("model", "dataset").is_duplicated())
    for model, dataset in sorted(set(duplicated.select("model", "dataset").iter_rows())):
        problems.append(f"- ({model!r}, {dataset!r}) appears more than once; keep one row per model and dataset")

    if problems:
        raise ConfigError(f"invalid published results table {source}:\n" + "\n".join(problems))


def _row_problems(row: dict[str, Any]) -> list[str]:
    problems = []
    if not row["model"] or not row["model"].strip():
        problems.append("model is empty")
    for column in ("top1", "top5"):
        value = row[column]
        if value is not None and not (0.0 <= value <= 100.0 and math.isfinite(value)):
            problems.append(f"{column} is {value}; accuracies are percentages in [0, 100]")
    if row["top1"] is None and row["top5"] is None:
        problems.append("top1 and top5 are both empty; give at least one")
    if row["img_size"] is not None and row["img_size"] < 1:
        problems.append(f"img_size is {row['img_size']}; use a positive number of pixels or leave it empty")
    if row["crop_pct"] is not None and not 0.0 < row["crop_pct"] <= MAX_CROP_PCT:
        problems.append(f"crop_pct is {row['crop_pct']}; use a value in (0, {MAX_CROP_PCT}] or leave it empty")
    if row["interpolation"] is not None and row["interpolation"] not in INTERPOLATIONS:
        allowed = ", ".join(INTERPOLATIONS)
        problems.append(f"interpolation is {row['interpolation']!r}; use one of {allowed} or leave it empty")
    if not row["dataset"] or not _DATASET_ID.match(row["dataset"]):
        problems.append(f"dataset is {row['dataset']!r}; use a lowercase id such as 'imagenet-val'")
    if row["kind"] not in KINDS:
        problems.append(f"kind is {row['kind']!r}; use one of {', '.join(KINDS)}")
    if row["kind"] == "model" and row["weights_public"] is None:
        problems.append("weights_public is empty; write true or false for a model row")
    if not row["source"] or not row["source"].strip():
        problems.append("source is empty; name the paper and table, or the repository file and commit")
    return problems


def compare_with_published(
    leaderboard: pl.DataFrame,
    published: pl.DataFrame,
    *,
    mapping: Mapping[str, str],
    datasets: Mapping[str, str],
) -> pl.DataFrame:
    """Add the published numbers of each measured model, their difference and whether they fall outside the 95% CI.

    ``mapping`` maps a leaderboard ``model`` to a ``model`` of the published table, and
    ``datasets`` maps a leaderboard ``dataset`` to the published dataset id it is a copy of.
    A row gets published numbers only when both map and the published row has that dataset id,
    so numbers measured on a sample are never set against numbers measured on ImageNet val.
    Rows whose ``valid`` column is false are not compared either.
    ``top1_diff`` is measured minus published, in percentage points. ``top1_outside_ci`` is true
    when the published top-1 lies outside [top1_low, top1_high]. ``preprocessing_matches`` is true
    when img_size, crop_pct and interpolation equal the published ones, and null when the table
    leaves any of them empty. Rows without a published counterpart get nulls in every added column.
    """
    import polars as pl

    _check_comparison_inputs(leaderboard, mapping=mapping, datasets=datasets)
    candidates = published.filter(pl.col("kind") == "model").select(
        pl.col("model").alias("published_model"),
        pl.col("dataset").alias("published_dataset"),
        pl.col("top1").alias("published_top1"),
        pl.col("top5").alias("published_top5"),
        pl.col("img_size").alias("published_img_size"),
        pl.col("crop_pct").alias("published_crop_pct"),
        pl.col("interpolation").alias("published_interpolation"),
        pl.col("source").alias("published_source"),
    )

    # A row that the leaderboard marks invalid (a probable label-order error) is compared with nothing.
    comparable = pl.col("valid") if "valid" in leaderboard.columns else pl.lit(True)
    keyed = leaderboard.with_columns(
        pl.when(comparable)
        .then(pl.col("model").replace_strict(dict(mapping), default=None, return_dtype=pl.String))
        .alias("published_model"),
        pl.col("dataset").replace_strict(dict(datasets), default=None, return_dtype=pl.String).alias("published_dataset"),
    )
    joined = keyed.join(
        candidates, on=["published_model", "published_dataset"], how="left", nulls_equal=False, maintain_order="left"
    )
    matched = pl.col("published_source").is_not_null()
    joined = joined.with_columns(pl.when(matched).then(pl.col("published_model")).alias("published_model"))
    compared = joined.with_columns(*_comparison_expressions()).select(*leaderboard.columns, *COMPARISON_COLUMNS)

    with_counterpart = compared.filter(pl.col("published_model").is_not_null())
    _LOGGER.info(
        "compared %d of %d leaderboard rows with published numbers; %d top-1 values lie outside the 95%% interval",
        with_counterpart.height, compared.height, int(with_counterpart["top1_outside_ci"].sum() or 0),
    )
    return compared


def _check_comparison_inputs(leaderboard: pl.DataFrame, *, mapping: Mapping[str, str], datasets: Mapping[str, str]) -> None:
    required = {"dataset", "model", "top1", "top1_low", "top1_high", "top5", "top5_low", "top5_high",
                "img_size", "crop_pct", "interpolation"}  # fmt: skip
    missing = sorted(required - set(leaderboard.columns))
    if missing:
        raise ValueError(f"the leaderboard lacks the columns {missing}; pass the frame that build_leaderboard returns")
    present = [column for column in COMPARISON_COLUMNS if column in leaderboard.columns]
    if present:
        raise ValueError(f"the leaderboard already has the published columns {present}; compare it only once")
    for name, value in (("mapping", mapping), ("datasets", datasets)):
        if not all(isinstance(key, str) and isinstance(target, str) for key, target in value.items()):
            raise ValueError(f"{name} must map strings to strings, got {dict(value)!r}")


def _comparison_expressions() -> list[pl.Expr]:
    import polars as pl

    expressions = []
    for metric in ("top1", "top5"):
        published = pl.col(f"published_{metric}")
        expressions.append((pl.col(metric) - published).round(3).alias(f"{metric}_diff"))
        expressions.append(
            ((published < pl.col(f"{metric}_low")) | (published > pl.col(f"{metric}_high"))).alias(f"{metric}_outside_ci")
        )

    settings = ("img_size", "crop_pct", "interpolation")
    any_missing = pl.any_horizontal(*(pl.col(f"published_{name}").is_null() for name in settings))
    all_equal = (
        (pl.col("img_size").cast(pl.Int64) == pl.col("published_img_size"))
        & ((pl.col("crop_pct").cast(pl.Float64) - pl.col("published_crop_pct")).abs() < 1e-6)
        & (pl.col("interpolation") == pl.col("published_interpolation"))
    )
    expressions.append(pl.when(any_missing).then(None).otherwise(all_equal).alias("preprocessing_matches"))
    return expressions


def published_table(config: dict[str, Any]) -> str:
    """Return the path of the published-results table that ``published.table`` names, else the repository's."""
    return str((config.get("published") or {}).get("table") or DEFAULT_TABLE)


def published_mapping(config: dict[str, Any]) -> dict[str, str]:
    """Return {model: published model} from the ``published_as:`` key of each configured model."""
    return {
        name: entry["published_as"]
        for name, entry in config.get("models", {}).items()
        if isinstance(entry, dict) and entry.get("published_as")
    }


def published_datasets(config: dict[str, Any]) -> dict[str, str]:
    """Return {dataset: published dataset id} from the ``published_dataset:`` key of each configured dataset."""
    return {
        name: entry["published_dataset"]
        for name, entry in config.get("datasets", {}).items()
        if isinstance(entry, dict) and entry.get("published_dataset")
    }


def check_published_config(config: dict[str, Any]) -> None:
    """Raise ConfigError when a ``published_as`` or ``published_dataset`` of ``config`` is not in the published table.

    The workflow runs this while it parses the config, so that a misspelt name stops the run
    before any evaluation. The table is read only when the config names one of them.
    """
    mapping, datasets = published_mapping(config), published_datasets(config)
    if not mapping and not datasets:
        return
    check_published_names(mapping=mapping, datasets=datasets, published=read_published(published_table(config)))


def check_published_names(*, mapping: Mapping[str, str], datasets: Mapping[str, str], published: pl.DataFrame) -> None:
    """Raise ConfigError when a model's ``published_as`` or a dataset's ``published_dataset`` is not in the table."""
    import polars as pl

    models = published.filter(pl.col("kind") == "model")
    known_models = set(models["model"].to_list())
    known_datasets = set(models["dataset"].to_list())

    problems = [
        f"- models.{name}.published_as: {target!r} is not a model of the published table; "
        f"known: {', '.join(sorted(known_models))}"
        for name, target in mapping.items()
        if target not in known_models
    ]
    problems += [
        f"- datasets.{name}.published_dataset: {target!r} is not a dataset of the published table; "
        f"known: {', '.join(sorted(known_datasets))}"
        for name, target in datasets.items()
        if target not in known_datasets
    ]
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(problems))
