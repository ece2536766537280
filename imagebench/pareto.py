"""Top-1 accuracy against throughput, with the Pareto front of the models marked."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import polars as pl
from plotnine import (
    aes,
    annotate,
    facet_wrap,
    geom_point,
    geom_step,
    geom_text,
    ggplot,
    labs,
    scale_colour_manual,
    scale_x_log10,
    theme,
    theme_bw,
)

from imagebench.throughput import DEVICE_TYPES

_LOGGER = logging.getLogger(__name__)

FRONT_COLOUR = "firebrick"
OTHER_COLOUR = "grey"


def pareto_front(frame: pl.DataFrame, *, x: str, y: str, by: Sequence[str] = ()) -> pl.DataFrame:
    """Add a boolean column ``pareto``: True for rows that no other row of their group dominates.

    A row dominates another when it is at least as high on both ``x`` and ``y`` and
    strictly higher on one, so two rows with equal values are both on the front. Rows
    with a null ``x`` or ``y`` are never on the front and never dominate.
    """
    by = list(by)
    keys = frame.select(by).rows() if by else [()] * frame.height
    points = frame.select(x, y).rows()

    on_front = []
    for index, (key, (x_value, y_value)) in enumerate(zip(keys, points)):
        if x_value is None or y_value is None:
            on_front.append(False)
            continue
        dominated = any(
            other_key == key
            and other_x is not None
            and other_y is not None
            and other_x >= x_value
            and other_y >= y_value
            and (other_x > x_value or other_y > y_value)
            for other_index, (other_key, (other_x, other_y)) in enumerate(zip(keys, points))
            if other_index != index
        )
        on_front.append(not dominated)
    return frame.with_columns(pl.Series("pareto", on_front, dtype=pl.Boolean))


def accuracy_throughput_table(*, leaderboard: pl.DataFrame) -> pl.DataFrame:
    """Pair top-1 per (dataset, model) with the best valid images per second per device type.

    ``leaderboard`` is results/leaderboard.parquet, whose throughput columns
    (``cpu_images_per_second``, ``cpu_setting``, ``cpu_device_name`` and the same for
    ``cuda``) rule aggregate joined from ``imagebench.throughput.summarize_throughput``.
    The result has one row per (dataset, device type, model) with a valid measurement, a
    ``panel`` label naming the dataset and the device, and the ``pareto`` column of
    ``pareto_front`` computed within each panel.
    """
    _check_throughput_columns(leaderboard)
    parts = []
    for device_type in DEVICE_TYPES:
        parts.append(
            leaderboard.select(
                "dataset",
                "model",
                "top1",
                pl.lit(device_type).alias("device_type"),
                pl.col(f"{device_type}_device_name").alias("device_name"),
                pl.col(f"{device_type}_images_per_second").alias("images_per_second"),
                pl.col(f"{device_type}_setting").alias("setting"),
            )
        )
    table = pl.concat(parts).filter(pl.col("images_per_second").is_not_null())

    missing = sorted(set(leaderboard["model"]) - set(table["model"]))
    if missing:
        _LOGGER.warning("no valid throughput measurement for %s; left out of the figure", ", ".join(missing))

    table = table.with_columns(
        pl.format("{} · {} ({})", pl.col("dataset"), pl.col("device_type"), pl.col("device_name")).alias("panel")
    ).sort("panel", "images_per_second")
    return pareto_front(table, x="images_per_second", y="top1", by=["panel"])


def _check_throughput_columns(leaderboard: pl.DataFrame) -> None:
    required = ["dataset", "model", "top1"] + [
        f"{device_type}_{name}" for device_type in DEVICE_TYPES for name in ("device_name", "images_per_second", "setting")
    ]
    missing = [column for column in required if column not in leaderboard.columns]
    if missing:
        raise ValueError(
            f"the leaderboard lacks the columns {missing}; pass results/leaderboard.parquet as written by rule "
            "aggregate, which joins the throughput summary"
        )


def plot_accuracy_vs_throughput(table: pl.DataFrame) -> ggplot:
    """Draw top-1 (%) against images per second on a log axis, with the Pareto front highlighted and a step line.

    The step line runs through the front from the most accurate model to the fastest:
    for any throughput on the x axis, it shows the best top-1 that a model at least that
    fast reaches.
    """
    if table.is_empty():
        return _empty_figure()

    data = table.with_columns(
        pl.when(pl.col("pareto")).then(pl.lit("Pareto front")).otherwise(pl.lit("dominated")).alias("front")
    ).to_pandas()
    front = table.filter(pl.col("pareto")).sort("panel", "images_per_second").to_pandas()
    # Labels sit above their points by 3% of the top-1 range, at least 0.3 percentage points.
    label_offset = max(0.03 * (table["top1"].max() - table["top1"].min()), 0.3)

    figure = (
        ggplot(data, aes(x="images_per_second", y="top1"))
        # Vertical then horizontal: from each front model down to the next one's top-1, then across to it.
        + geom_step(front, aes(group="panel"), direction="vh", colour=FRONT_COLOUR, linetype="dashed")
        + geom_point(aes(colour="front"), size=2.5)
        + geom_text(aes(label="model"), size=7, va="bottom", nudge_y=label_offset)
        # Room on both sides, so that the labels of the slowest and fastest models are not cut off.
        + scale_x_log10(labels=_plain_numbers, expand=(0.25, 0))
        + scale_colour_manual(values={"Pareto front": FRONT_COLOUR, "dominated": OTHER_COLOUR})
        + labs(x="throughput (images/s, log scale)", y="top-1 accuracy (%)", colour="")
        + theme_bw()
        + theme(legend_position="bottom")
    )
    if table["panel"].n_unique() > 1:
        figure = figure + facet_wrap("~panel", scales="free_x")
    else:
        figure = figure + labs(title=table["panel"][0])
    return figure


def _plain_numbers(breaks: Sequence[float]) -> list[str]:
    return [f"{value:,.0f}" if value >= 10 else f"{value:g}" for value in breaks]


def _empty_figure() -> ggplot:
    return (
        ggplot()
        + annotate("text", x=0, y=0, label="no valid throughput measurement to plot")
        + theme_bw()
        + labs(x="throughput (images/s, log scale)", y="top-1 accuracy (%)")
    )
