"""Report figures drawn with plotnine from the leaderboard."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import polars as pl  # noqa: E402
from plotnine import (  # noqa: E402
    aes,
    coord_flip,
    element_text,
    facet_wrap,
    geom_errorbar,
    geom_hline,
    geom_line,
    geom_point,
    geom_vline,
    geom_text,
    ggplot,
    labs,
    theme,
    theme_bw,
)

from imagebench.config import settings_from_section  # noqa: E402
from imagebench.io import atomic_path  # noqa: E402

_LOGGER = logging.getLogger(__name__)

HUMAN_TOP5_SOURCE = "human (Russakovsky et al. 2015)"


@dataclass(frozen=True)
class FigureSettings:
    human_top5: float = 94.9
    width: float = 7.0
    height: float = 4.0
    dpi: int = 150

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> FigureSettings:
        return settings_from_section(cls, section)


def accuracy_long(leaderboard: pl.DataFrame) -> pl.DataFrame:
    """Reshape the leaderboard to one row per (dataset, model, metric) with its interval."""
    parts = []
    for metric, label in (("top1", "top-1"), ("top5", "top-5")):
        parts.append(
            leaderboard.select(
                "dataset",
                "model",
                pl.lit(label).alias("metric"),
                pl.col(metric).alias("accuracy"),
                pl.col(f"{metric}_low").alias("low"),
                pl.col(f"{metric}_high").alias("high"),
            )
        )
    return pl.concat(parts)


def plot_accuracy(leaderboard: pl.DataFrame, settings: FigureSettings) -> ggplot:
    """Top-1 and top-5 per model with 95% intervals, and the human top-5 baseline on the top-5 panel.

    Rows that the leaderboard marks invalid (a probable label-order error) are left out.
    """
    valid = leaderboard.filter(pl.col("valid")) if "valid" in leaderboard.columns else leaderboard
    if valid.is_empty():
        raise ValueError("every leaderboard row is marked invalid; see results/leaderboard.md for the reasons")
    data = accuracy_long(valid).to_pandas()
    human = pl.DataFrame(
        {"metric": ["top-5"], "accuracy": [settings.human_top5], "label": [f"{HUMAN_TOP5_SOURCE}: {settings.human_top5}%"]}
    ).to_pandas()

    return (
        ggplot(data, aes(x="model", y="accuracy", colour="dataset"))
        + geom_errorbar(aes(ymin="low", ymax="high"), width=0.25)
        + geom_point(size=2.5)
        + geom_hline(human, aes(yintercept="accuracy"), linetype="dashed", colour="firebrick")
        + geom_text(
            human, aes(x=0.6, y="accuracy", label="label"),
            inherit_aes=False, angle=90, ha="left", va="bottom", size=7, colour="firebrick",
        )
        + facet_wrap("~metric", scales="free_x")
        + coord_flip()
        + labs(x="", y="accuracy (%) with 95% Wilson interval", colour="dataset")
        + theme_bw()
        + theme(legend_position="bottom", axis_text_y=element_text(size=8))
    )


def resolution_sweep_data(leaderboard: pl.DataFrame, model: str) -> pl.DataFrame:
    """Return the rows of ``model``'s test-resolution sweep, in long format, sorted by resolution."""
    rows = leaderboard.filter(pl.col("base_model") == model)
    if rows.is_empty():
        raise ValueError(f"the leaderboard has no rows for model {model!r}; was it evaluated?")
    long = accuracy_long(rows).join(
        rows.select("dataset", "model", "img_size", "crop_pct", "pretrained_img_size"), on=["dataset", "model"]
    )
    return long.with_columns(
        pl.format("crop_pct {}", pl.col("crop_pct")).alias("crop"),
        pl.format("{} {}", pl.col("dataset"), pl.col("crop_pct")).alias("series"),
    ).sort("img_size")


def plot_resolution_sweep(leaderboard: pl.DataFrame, model: str, settings: FigureSettings) -> ggplot:
    """Top-1 and top-5 of one model against test resolution; the dotted line marks the pretrained resolution."""
    data = resolution_sweep_data(leaderboard, model)
    pretrained = data.select("metric", pl.col("pretrained_img_size").alias("img_size")).unique().to_pandas()

    return (
        ggplot(data.to_pandas(), aes(x="img_size", y="accuracy", colour="crop", shape="dataset"))
        + geom_vline(pretrained, aes(xintercept="img_size"), linetype="dotted", colour="grey")
        + geom_errorbar(aes(ymin="low", ymax="high"), width=4, alpha=0.6)
        + geom_line(aes(group="series"))
        + geom_point(size=2.2)
        + facet_wrap("~metric", scales="free_y")
        + labs(
            x="test resolution (px); dotted: pretrained config's resolution",
            y="accuracy (%) with 95% Wilson interval",
            title=f"{model}: accuracy against test resolution",
            colour="",
            shape="dataset",
        )
        + theme_bw()
        + theme(legend_position="bottom")
    )


def save_figure(plot: ggplot, path: Path, settings: FigureSettings) -> None:
    """Save ``plot`` atomically in the format named by the file extension (png or svg)."""
    file_format = Path(path).suffix.lstrip(".")
    # An SVG gets no date and fixed element ids, so that a rerun writes the same bytes.
    options = {"metadata": {"Date": None}} if file_format == "svg" else {}
    with matplotlib.rc_context({"svg.hashsalt": "imagebench"}), atomic_path(path) as temporary:
        plot.save(
            temporary, format=file_format, width=settings.width, height=settings.height, dpi=settings.dpi,
            units="in", verbose=False, **options,
        )
    _LOGGER.info("wrote %s", path)
