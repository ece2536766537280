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
    geom_point,
    geom_text,
    ggplot,
    labs,
    theme,
    theme_bw,
)

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
        return cls(**{key: section[key] for key in cls.__dataclass_fields__ if key in section})


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
    """Top-1 and top-5 per model with 95% intervals, and the human top-5 baseline on the top-5 panel."""
    data = accuracy_long(leaderboard).to_pandas()
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


def save_figure(plot: ggplot, path: Path, settings: FigureSettings) -> None:
    """Save ``plot`` atomically in the format named by the file extension (png or svg)."""
    file_format = Path(path).suffix.lstrip(".")
    with atomic_path(path) as temporary:
        plot.save(
            temporary, format=file_format, width=settings.width, height=settings.height, dpi=settings.dpi,
            units="in", verbose=False,
        )
    _LOGGER.info("wrote %s", path)
