"""Pareto front of top-1 against throughput, and the figure that marks it."""

import logging
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagebench.aggregate import join_throughput
from imagebench.figures import FigureSettings, save_figure
from imagebench.pareto import accuracy_throughput_table, pareto_front, plot_accuracy_vs_throughput
from imagebench.throughput import summary_schema

SMALL_FIGURE = FigureSettings(width=5, height=3, dpi=50)


def _front(points: dict[str, tuple[float | None, float | None]]) -> set[str]:
    frame = pl.DataFrame(
        {
            "model": list(points),
            "speed": [speed for speed, _ in points.values()],
            "top1": [top1 for _, top1 in points.values()],
        },
        schema={"model": pl.String, "speed": pl.Float64, "top1": pl.Float64},
    )
    marked = pareto_front(frame, x="speed", y="top1")
    return set(marked.filter(pl.col("pareto"))["model"])


def test_front_of_hand_made_table():
    points = {
        "accurate": (10.0, 80.0),
        "balanced": (100.0, 75.0),
        "fast": (1000.0, 60.0),
        # Slower and less accurate than "balanced".
        "dominated": (50.0, 70.0),
        # As fast as "balanced" and less accurate.
        "same_speed_worse": (100.0, 74.0),
        # As accurate as "accurate" and slower.
        "same_top1_slower": (5.0, 80.0),
    }
    assert _front(points) == {"accurate", "balanced", "fast"}


def test_equal_points_both_on_front():
    assert _front({"a": (10.0, 70.0), "b": (10.0, 70.0), "c": (5.0, 60.0)}) == {"a", "b"}


def test_null_values_never_on_front():
    assert _front({"a": (10.0, 70.0), "missing_speed": (None, 90.0), "missing_top1": (50.0, None)}) == {"a"}


def test_front_computed_per_group():
    frame = pl.DataFrame(
        {
            "device": ["cpu", "cpu", "cuda", "cuda"],
            "model": ["a", "b", "a", "b"],
            "speed": [10.0, 20.0, 1000.0, 500.0],
            "top1": [80.0, 70.0, 80.0, 70.0],
        }
    )
    marked = pareto_front(frame, x="speed", y="top1", by=["device"])
    assert marked["pareto"].to_list() == [True, True, True, False]


@given(st.lists(st.tuples(st.integers(1, 20), st.integers(1, 20)), min_size=1, max_size=25))
def test_front_matches_definition(points: list[tuple[int, int]]):
    frame = pl.DataFrame({"speed": [float(x) for x, _ in points], "top1": [float(y) for _, y in points]})
    marked = pareto_front(frame, x="speed", y="top1")["pareto"].to_list()

    def dominates(first, second):
        return first[0] >= second[0] and first[1] >= second[1] and first != second

    for point, on_front in zip(points, marked):
        assert on_front == (not any(dominates(other, point) for other in points))
    assert any(marked)


def _accuracies() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "dataset": ["imagenet", "imagenet", "imagenet", "imagenet"],
            "model": ["lite0", "lite1", "lite2", "unmeasured"],
            "top1": [75.0, 77.0, 78.0, 79.0],
        }
    )


def _throughput() -> pl.DataFrame:
    rows = []
    for model, cpu, cuda in (("lite0", 90.0, 9000.0), ("lite1", 60.0, 6000.0), ("lite2", 70.0, None)):
        row = {key: None for key in summary_schema()}
        row.update(
            model=model, cpu_images_per_second=cpu, cpu_setting="cpu-fp32-b32", cpu_device_name="Xeon",
            cuda_images_per_second=cuda, cuda_setting="cuda-fp16-b256" if cuda else None,
            cuda_device_name="H100" if cuda else None, invalid_settings="",
        )
        rows.append(row)
    return pl.DataFrame(rows, schema=summary_schema())


def _leaderboard(throughput: pl.DataFrame | None = None) -> pl.DataFrame:
    """A leaderboard as rule aggregate writes it: accuracies with the throughput summary joined by model."""
    return join_throughput(_accuracies(), _throughput() if throughput is None else throughput)


def test_table_joins_top1_and_speed_per_device(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING):
        table = accuracy_throughput_table(leaderboard=_leaderboard())

    assert "unmeasured" in caplog.text
    assert table.height == 5
    assert set(table["panel"]) == {"imagenet · cpu (Xeon)", "imagenet · cuda (H100)"}
    cpu = table.filter(pl.col("device_type") == "cpu")
    # lite1 is slower and less accurate than lite2 on the CPU.
    assert dict(zip(cpu["model"], cpu["pareto"])) == {"lite0": True, "lite1": False, "lite2": True}
    cuda = table.filter(pl.col("device_type") == "cuda")
    assert dict(zip(cuda["model"], cuda["pareto"])) == {"lite0": True, "lite1": True}


def test_table_reads_speeds_from_leaderboard_only():
    table = accuracy_throughput_table(leaderboard=_leaderboard())

    assert table.columns == [
        "dataset", "model", "top1", "device_type", "device_name", "images_per_second", "setting", "panel", "pareto",
    ]  # fmt: skip
    lite0_cpu = table.filter((pl.col("model") == "lite0") & (pl.col("device_type") == "cpu")).row(0, named=True)
    assert lite0_cpu["images_per_second"] == 90.0
    assert lite0_cpu["setting"] == "cpu-fp32-b32"
    assert lite0_cpu["device_name"] == "Xeon"


def test_leaderboard_without_throughput_rejected():
    with pytest.raises(ValueError, match="cpu_images_per_second"):
        accuracy_throughput_table(leaderboard=_accuracies())


def test_figure_steps_through_front_only():
    table = accuracy_throughput_table(leaderboard=_leaderboard())
    figure = plot_accuracy_vs_throughput(table)

    step = figure.layers[0]
    assert type(step.geom).__name__ == "geom_step"
    assert step.geom.params["direction"] == "vh"
    assert sorted(step.geom.data["model"]) == ["lite0", "lite0", "lite1", "lite2"]
    assert step.geom.data["pareto"].all()


def test_figure_saved_as_png_and_svg(tmp_path: Path):
    table = accuracy_throughput_table(leaderboard=_leaderboard())
    figure = plot_accuracy_vs_throughput(table)
    for name in ("pareto.png", "pareto.svg"):
        save_figure(figure, tmp_path / name, SMALL_FIGURE)
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "pareto.png").read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in (tmp_path / "pareto.svg").read_bytes()[:1000]


def test_figure_without_measurements(tmp_path: Path):
    empty = pl.DataFrame(schema=summary_schema())
    table = accuracy_throughput_table(leaderboard=_leaderboard(empty))
    assert table.is_empty()
    save_figure(plot_accuracy_vs_throughput(table), tmp_path / "empty.png", SMALL_FIGURE)
    assert (tmp_path / "empty.png").stat().st_size > 0
