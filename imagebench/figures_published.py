"""Figure of measured accuracies beside published ones, with the human top-5 baseline.

Measured points are filled circles with their 95% Wilson interval; published points are
hollow diamonds without an interval, because papers report none. Colour names the dataset,
so a number measured on a small sample is never mistaken for one on ImageNet val. The human
baseline is a dashed line on the top-5 panel only, since it was measured as top-5 error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagebench.steps import job

if TYPE_CHECKING:
    import polars as pl
    from plotnine import ggplot

    from imagebench.figures import FigureSettings

MEASURED = "measured (95% CI)"
PUBLISHED = "published"
METRICS = (("top1", "top-1"), ("top5", "top-5"))
# Height in inches per model row, so that a long table keeps readable labels.
ROW_HEIGHT = 0.22


def comparison_points(leaderboard: pl.DataFrame, published: pl.DataFrame) -> pl.DataFrame:
    """Return one row per (point, metric): measured rows with their interval, published model rows without one."""
    import polars as pl

    if "valid" in leaderboard.columns:
        # Rows that the leaderboard marks invalid (a probable label-order error) are left out.
        leaderboard = leaderboard.filter(pl.col("valid"))
    parts = []
    for metric, label in METRICS:
        parts.append(
            leaderboard.select(
                pl.format("{} ({})", pl.col("model"), pl.col("dataset")).alias("entry"),
                pl.col("dataset"),
                pl.lit(MEASURED).alias("source"),
                pl.lit(label).alias("metric"),
                pl.col(metric).cast(pl.Float64).alias("accuracy"),
                pl.col(f"{metric}_low").cast(pl.Float64).alias("low"),
                pl.col(f"{metric}_high").cast(pl.Float64).alias("high"),
            )
        )
        parts.append(
            published.filter(pl.col("kind") == "model").select(
                pl.format("{} ({})", pl.col("model"), pl.col("dataset")).alias("entry"),
                pl.col("dataset"),
                pl.lit(PUBLISHED).alias("source"),
                pl.lit(label).alias("metric"),
                pl.col(metric).alias("accuracy"),
                pl.lit(None, dtype=pl.Float64).alias("low"),
                pl.lit(None, dtype=pl.Float64).alias("high"),
            )
        )
    points = pl.concat(parts).filter(pl.col("accuracy").is_not_null())
    order = points.filter(pl.col("metric") == "top-1").sort("accuracy")["entry"].unique(maintain_order=True).to_list()
    remaining = [entry for entry in points["entry"].unique(maintain_order=True).to_list() if entry not in order]
    return points.with_columns(pl.col("entry").cast(pl.Enum(remaining + order)))


def human_baselines(published: pl.DataFrame) -> pl.DataFrame:
    """Return the top-5 accuracies of the table's human rows, labelled like the accuracy figure's baseline.

    The label names the source's authors and year, the part of the ``source`` cell before its
    first comma, such as "human (Russakovsky et al. 2015): 94.9%".
    """
    import polars as pl

    authors = pl.col("source").str.split(",").list.first().str.strip_chars()
    return published.filter((pl.col("kind") == "human") & pl.col("top5").is_not_null()).select(
        pl.lit("top-5").alias("metric"),
        pl.col("top5").alias("accuracy"),
        pl.format("human ({}): {}%", authors, pl.col("top5")).alias("label"),
    )


def plot_published(leaderboard: pl.DataFrame, published: pl.DataFrame, settings: FigureSettings) -> ggplot:
    """Top-1 and top-5 of measured and published models; shape and fill tell them apart."""
    from plotnine import (
        aes,
        coord_flip,
        element_text,
        facet_wrap,
        geom_errorbar,
        geom_hline,
        geom_point,
        geom_text,
        ggplot,
        guide_legend,
        guides,
        labs,
        scale_fill_manual,
        scale_shape_manual,
        theme,
        theme_bw,
    )

    points = comparison_points(leaderboard, published)
    measured = points.filter(points["source"] == MEASURED)
    human = human_baselines(published)
    palette = _dataset_palette(points["dataset"].unique().sort().to_list())

    plot = (
        ggplot(points.to_pandas(), aes(x="entry", y="accuracy", colour="dataset"))
        + geom_errorbar(measured.to_pandas(), aes(ymin="low", ymax="high"), width=0.3)
        + geom_point(aes(shape="source", fill="source"), size=2.5, stroke=0.8)
        + scale_shape_manual(values={MEASURED: "o", PUBLISHED: "D"})
        # Published points are hollow: a white fill inside the dataset's colour.
        + scale_fill_manual(values={MEASURED: "black", PUBLISHED: "white"})
        + facet_wrap("~metric", scales="free_x")
        + coord_flip()
        + labs(x="", y="accuracy (%)", colour="dataset", shape="", fill="")
        # Two columns keep long dataset names inside the figure's width.
        + guides(colour=guide_legend(ncol=2))
        + theme_bw()
        # The panels have their own x scales, so without spacing the last tick label of one
        # runs into the first tick label of the next.
        + theme(legend_position="bottom", legend_box="vertical", axis_text_y=element_text(size=7), panel_spacing=0.04)
    )
    if palette:
        from plotnine import scale_colour_manual

        plot = plot + scale_colour_manual(values=palette)
    if human.height:
        plot = (
            plot
            + geom_hline(human.to_pandas(), aes(yintercept="accuracy"), linetype="dashed", colour="firebrick")
            + geom_text(
                human.to_pandas(), aes(x=0.6, y="accuracy", label="label"),
                inherit_aes=False, angle=90, ha="right", va="bottom", size=6, colour="firebrick",
            )
        )
    return plot


def figure_height(leaderboard: pl.DataFrame, published: pl.DataFrame, settings: FigureSettings) -> float:
    """Return the configured height, raised so that every model row gets ROW_HEIGHT inches."""
    entries = comparison_points(leaderboard, published)["entry"].n_unique()
    return max(settings.height, ROW_HEIGHT * entries + 1.8)


def _dataset_palette(datasets: list[str]) -> dict[str, str]:
    # Colours from matplotlib's tab10, so that a dataset keeps its colour whatever else is plotted.
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    return {dataset: colours[index % len(colours)] for index, dataset in enumerate(datasets)}


@job
def plot_published_step(snakemake: Any) -> None:
    """Job of rule plot_published: the comparison figure as PNG and SVG."""
    import dataclasses

    import polars as pl

    from imagebench.figures import FigureSettings, save_figure
    from imagebench.published import read_published

    leaderboard = pl.read_parquet(snakemake.input.leaderboard)
    published = read_published(snakemake.input.published)
    settings = FigureSettings.from_config(snakemake.params.figures)
    settings = dataclasses.replace(settings, height=figure_height(leaderboard, published, settings))
    figure = plot_published(leaderboard, published, settings)
    save_figure(figure, Path(snakemake.output.png), settings)
    save_figure(figure, Path(snakemake.output.svg), settings)
