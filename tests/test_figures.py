from pathlib import Path

import polars as pl
import pytest

from imagebench.figures import (
    FigureSettings,
    accuracy_long,
    plot_accuracy,
    plot_resolution_sweep,
    resolution_sweep_data,
    save_figure,
)


def _leaderboard() -> pl.DataFrame:
    rows = []
    for model, img_size, top1, top5 in [
        ("lite0", 224, 90.8, 98.4), ("lite0@192", 192, 88.0, 97.0), ("lite0@288", 288, 91.2, 98.6),
    ]:
        rows.append({
            "dataset": "sample", "model": model, "base_model": "lite0",
            "top1": top1, "top1_low": top1 - 2, "top1_high": top1 + 2,
            "top5": top5, "top5_low": top5 - 1, "top5_high": min(100.0, top5 + 1),
            "img_size": img_size, "pretrained_img_size": 224, "crop_pct": 0.875, "valid": True,
        })
    return pl.DataFrame(rows)


def test_accuracy_long_has_both_metrics():
    long = accuracy_long(_leaderboard())
    assert long.height == 6
    assert sorted(long["metric"].unique().to_list()) == ["top-1", "top-5"]


def test_accuracy_figure_saved_as_png_and_svg(tmp_path: Path):
    settings = FigureSettings(width=5, height=3, dpi=50)
    plot = plot_accuracy(_leaderboard(), settings)
    for name in ("accuracy.png", "accuracy.svg"):
        save_figure(plot, tmp_path / name, settings)
        assert (tmp_path / name).stat().st_size > 1000
    assert "human (Russakovsky et al. 2015): 94.9%" in (tmp_path / "accuracy.svg").read_text()


def test_accuracy_figure_rejects_all_invalid():
    with pytest.raises(ValueError, match="every leaderboard row is marked invalid"):
        plot_accuracy(_leaderboard().with_columns(pl.lit(False).alias("valid")), FigureSettings())


def test_resolution_sweep_sorted_and_drawn(tmp_path: Path):
    data = resolution_sweep_data(_leaderboard(), "lite0")
    assert data.filter(pl.col("metric") == "top-1")["img_size"].to_list() == [192, 224, 288]
    settings = FigureSettings(width=5, height=3, dpi=50)
    save_figure(plot_resolution_sweep(_leaderboard(), "lite0", settings), tmp_path / "sweep.png", settings)
    assert (tmp_path / "sweep.png").stat().st_size > 1000


def test_resolution_sweep_unknown_model():
    with pytest.raises(ValueError, match="no rows for model 'lite9'"):
        resolution_sweep_data(_leaderboard(), "lite9")
