"""The greedy-steps figure of a soup."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl
    from plotnine import ggplot


def plot_greedy_steps(steps: pl.DataFrame, *, uniform_top1: float | None) -> ggplot:
    """Held-out top-1 of each greedy candidate, kept or rejected, with the soup's running best and the uniform soup."""
    import polars as pl
    from plotnine import (
        aes, element_text, geom_hline, geom_point, geom_step, geom_text, ggplot, labs,
        scale_colour_manual, scale_shape_manual, scale_x_continuous, theme, theme_bw,
    )  # fmt: skip

    data = steps.with_columns(
        pl.when(pl.col("accepted")).then(pl.lit("kept")).otherwise(pl.lit("rejected")).alias("decision")
    ).to_pandas()
    labels = [f"{step}: {name}" for step, name in zip(steps["step"].to_list(), steps["ingredient"].to_list())]

    plot = (
        ggplot(data, aes(x="step"))
        + geom_step(aes(y="best_top1"), colour="grey", direction="hv")
        + geom_point(aes(y="ingredient_top1"), colour="grey", shape="_", size=4)
        + geom_point(aes(y="candidate_top1", colour="decision", shape="decision"), size=3)
        + scale_colour_manual(values={"kept": "#2ca02c", "rejected": "#d62728"})
        + scale_shape_manual(values={"kept": "o", "rejected": "x"})
        + scale_x_continuous(breaks=steps["step"].to_list(), labels=labels)
        + labs(
            x="ingredient added, in order of its own held-out top-1",
            y="held-out top-1 (%)",
            colour="greedy decision",
            shape="greedy decision",
            caption="grey line: greedy soup so far; grey dashes: ingredient alone",
        )
        + theme_bw()
        + theme(axis_text_x=element_text(rotation=45, ha="right", size=7), legend_position="bottom")
    )
    if uniform_top1 is not None:
        uniform = pl.DataFrame({"top1": [uniform_top1], "label": [f"uniform soup: {uniform_top1:.2f}%"]}).to_pandas()
        plot = (
            plot
            + geom_hline(uniform, aes(yintercept="top1"), linetype="dashed", colour="#1f77b4")
            + geom_text(uniform, aes(x=1, y="top1", label="label"), inherit_aes=False, ha="left", va="bottom",
                        size=7, colour="#1f77b4")  # fmt: skip
        )
    return plot
