"""The published-results table, its comparison with the leaderboard, and the comparison figure."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from imagebench.errors import ConfigError
from imagebench.figures import FigureSettings, save_figure
from imagebench.figures_published import MEASURED, PUBLISHED, comparison_points, human_baselines, plot_published
from imagebench.published import (
    COMPARISON_COLUMNS,
    DEFAULT_TABLE,
    PUBLISHED_COLUMNS,
    check_published_names,
    compare_with_published,
    published_datasets,
    published_mapping,
    published_schema,
    read_published,
)

REPO = Path(__file__).resolve().parents[1]
TABLE = DEFAULT_TABLE


@pytest.fixture(scope="module")
def published() -> pl.DataFrame:
    return read_published(TABLE)


def leaderboard_rows(rows: list[dict]) -> pl.DataFrame:
    """A leaderboard with the columns that the comparison reads."""
    base = {
        "dataset": "imagenet-val", "model": "efficientnet_lite0", "top1": 74.8, "top1_low": 74.4, "top1_high": 75.2,
        "top5": 92.2, "top5_low": 92.0, "top5_high": 92.4, "img_size": 224, "crop_pct": 0.875,
        "interpolation": "bicubic", "valid": True,
    }  # fmt: skip
    return pl.DataFrame([{**base, **row} for row in rows])


def write_table(path: Path, published: pl.DataFrame) -> Path:
    published.write_csv(path)
    return path


def test_table_has_the_documented_columns_and_types(published):
    assert tuple(published.columns) == PUBLISHED_COLUMNS
    assert published.schema == pl.Schema(published_schema())


def test_table_values_are_in_range(published):
    for column in ("top1", "top5"):
        values = published[column].drop_nulls()
        assert values.min() >= 0, column
        assert values.max() <= 100, column
    assert published.filter(pl.col("top1").is_null() & pl.col("top5").is_null()).is_empty()
    assert published["img_size"].drop_nulls().min() >= 1
    assert set(published["kind"]) <= {"model", "human"}


def test_every_row_names_a_source(published):
    assert published.filter(pl.col("source").is_null() | (pl.col("source").str.strip_chars() == "")).is_empty()


def test_model_rows_say_whether_weights_are_public(published):
    assert published.filter((pl.col("kind") == "model") & pl.col("weights_public").is_null()).is_empty()


@pytest.mark.parametrize(
    ("model", "top1", "top5", "img_size", "weights_public"),
    [
        ("florence_coswin_h", 90.05, 99.02, 512, False),
        ("fixefficientnet_l2", 88.5, 98.7, 600, False),
        ("vit_g14_greedy_soup", 90.94, None, None, False),
        ("clip_vit_b32_greedy_soup", 81.026, None, 224, True),
        ("clip_vit_b32_uniform_soup", 79.972, None, 224, True),
        ("clip_vit_b32_best_ingredient", 80.386, None, 224, True),
        ("coca", 91.0, None, None, False),
        ("tf_efficientnet_lite0.in1k", 74.830, 92.172, 224, True),
        ("tf_efficientnet_lite1.in1k", 76.644, 93.230, 240, True),
        ("tf_efficientnet_lite2.in1k", 77.464, 93.750, 260, True),
    ],
)
def test_table_holds_the_reference_results(published, model, top1, top5, img_size, weights_public):
    row = published.filter(pl.col("model") == model).row(0, named=True)

    assert row["dataset"] == "imagenet-val"
    assert row["top1"] == pytest.approx(top1)
    assert row["top5"] == (None if top5 is None else pytest.approx(top5))
    assert row["img_size"] == img_size
    assert row["weights_public"] is weights_public


def test_timm_rows_cite_timm_results_file(published):
    timm_rows = published.filter(pl.col("model").str.starts_with("tf_efficientnet_lite"))

    assert timm_rows.height == 3
    assert timm_rows["source"].str.contains("pytorch-image-models results/results-imagenet.csv").all()


def test_human_row_is_top5_only(published):
    human = published.filter(pl.col("kind") == "human").row(0, named=True)

    assert human["top1"] is None
    assert human["top5"] == pytest.approx(94.9)
    assert human["dataset"] != "imagenet-val"
    assert human["weights_public"] is None


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("top1", 101.0, "top1 is 101.0"),
        ("top5", -1.0, "top5 is -1.0"),
        ("source", "  ", "source is empty"),
        ("interpolation", "cubic", "interpolation is 'cubic'"),
        ("kind", "paper", "kind is 'paper'"),
        ("dataset", "ImageNet Val", "dataset is 'ImageNet Val'"),
        ("crop_pct", 3.0, "crop_pct is 3.0"),
        ("img_size", 0, "img_size is 0"),
    ],
)
def test_invalid_cell_is_named(tmp_path, published, column, value, message):
    broken = published.with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(pl.lit(value)).otherwise(pl.col(column)).cast(published.schema[column]).alias(column)
    )

    with pytest.raises(ConfigError, match=rf"line 3 \('tf_efficientnet_lite1.in1k'\): {message}"):
        read_published(write_table(tmp_path / "table.csv", broken))


def test_missing_weights_public_is_rejected(tmp_path, published):
    broken = published.with_columns(pl.lit(None, dtype=pl.Boolean).alias("weights_public"))

    with pytest.raises(ConfigError, match="weights_public is empty"):
        read_published(write_table(tmp_path / "table.csv", broken))


def test_row_without_accuracy_is_rejected(tmp_path, published):
    broken = published.with_columns(pl.lit(None, dtype=pl.Float64).alias("top1"), pl.lit(None, dtype=pl.Float64).alias("top5"))

    with pytest.raises(ConfigError, match="top1 and top5 are both empty"):
        read_published(write_table(tmp_path / "table.csv", broken))


def test_duplicate_rows_are_rejected(tmp_path, published):
    with pytest.raises(ConfigError, match=r"\('coca', 'imagenet-val'\) appears more than once"):
        read_published(write_table(tmp_path / "table.csv", pl.concat([published, published.tail(2)])))


def test_wrong_columns_are_rejected(tmp_path, published):
    with pytest.raises(ConfigError, match="expected exactly"):
        read_published(write_table(tmp_path / "table.csv", published.drop("notes")))


def test_unparsable_value_is_rejected(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text(",".join(PUBLISHED_COLUMNS) + "\nm,high,,,,,imagenet-val,model,true,paper,\n")

    with pytest.raises(ConfigError, match="cannot be parsed"):
        read_published(path)


def test_missing_table_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_published(tmp_path / "absent.csv")


def test_comparison_on_same_data_adds_difference(published):
    leaderboard = leaderboard_rows([{}])

    compared = compare_with_published(
        leaderboard, published, mapping={"efficientnet_lite0": "tf_efficientnet_lite0.in1k"},
        datasets={"imagenet-val": "imagenet-val"},
    )  # fmt: skip
    row = compared.row(0, named=True)

    assert compared.columns == [*leaderboard.columns, *COMPARISON_COLUMNS]
    assert row["published_model"] == "tf_efficientnet_lite0.in1k"
    assert row["published_top1"] == pytest.approx(74.83)
    assert row["top1_diff"] == pytest.approx(74.8 - 74.83)
    assert row["top1_outside_ci"] is False
    assert row["top5_outside_ci"] is False
    assert row["preprocessing_matches"] is True
    assert "results-imagenet.csv" in row["published_source"]


def test_published_value_outside_interval_is_flagged(published):
    leaderboard = leaderboard_rows([{"top1": 72.0, "top1_low": 71.5, "top1_high": 72.5, "top5_high": 92.1}])

    row = compare_with_published(
        leaderboard, published, mapping={"efficientnet_lite0": "tf_efficientnet_lite0.in1k"},
        datasets={"imagenet-val": "imagenet-val"},
    ).row(0, named=True)  # fmt: skip

    assert row["top1_outside_ci"] is True
    assert row["top5_outside_ci"] is True
    assert row["top1_diff"] == pytest.approx(-2.83)


def test_other_dataset_gets_no_published_numbers(published):
    leaderboard = leaderboard_rows([{"dataset": "imagenet-sample"}])

    compared = compare_with_published(
        leaderboard, published, mapping={"efficientnet_lite0": "tf_efficientnet_lite0.in1k"}, datasets={}
    )

    assert compared.select(COMPARISON_COLUMNS).row(0) == (None,) * len(COMPARISON_COLUMNS)
    assert_frame_equal(compared.select(leaderboard.columns), leaderboard)


def test_other_published_dataset_not_compared(published):
    compared = compare_with_published(
        leaderboard_rows([{"dataset": "imagenet-sample"}]), published,
        mapping={"efficientnet_lite0": "tf_efficientnet_lite0.in1k"}, datasets={"imagenet-sample": "imagenetv2"},
    )  # fmt: skip

    assert compared["published_top1"].to_list() == [None]


def test_unmapped_model_gets_no_published_numbers(published):
    compared = compare_with_published(
        leaderboard_rows([{"model": "efficientnet_lite2"}]), published, mapping={}, datasets={"imagenet-val": "imagenet-val"}
    )

    assert compared["top1_diff"].to_list() == [None]


def test_other_preprocessing_is_marked(published):
    row = compare_with_published(
        leaderboard_rows([{"model": "efficientnet_lite0@260", "img_size": 260}]), published,
        mapping={"efficientnet_lite0@260": "tf_efficientnet_lite0.in1k"}, datasets={"imagenet-val": "imagenet-val"},
    ).row(0, named=True)  # fmt: skip

    assert row["preprocessing_matches"] is False
    assert row["published_top1"] == pytest.approx(74.83)


def test_missing_published_preprocessing_gives_null(published):
    row = compare_with_published(
        leaderboard_rows([{"model": "soup"}]), published, mapping={"soup": "vit_g14_greedy_soup"},
        datasets={"imagenet-val": "imagenet-val"},
    ).row(0, named=True)  # fmt: skip

    assert row["preprocessing_matches"] is None
    assert row["top5_diff"] is None
    assert row["top1_diff"] == pytest.approx(74.8 - 90.94)


def test_human_row_is_never_compared(published):
    compared = compare_with_published(
        leaderboard_rows([{"dataset": "test-1500"}]), published, mapping={"efficientnet_lite0": "human_trained_annotator"},
        datasets={"test-1500": "ilsvrc2012-test-1500"},
    )  # fmt: skip

    assert compared["published_model"].to_list() == [None]


def test_invalid_row_is_not_compared(published):
    compared = compare_with_published(
        leaderboard_rows([{"valid": False}]), published, mapping={"efficientnet_lite0": "tf_efficientnet_lite0.in1k"},
        datasets={"imagenet-val": "imagenet-val"},
    )  # fmt: skip

    assert compared["published_model"].to_list() == [None]


def test_leaderboard_without_interval_columns_is_rejected(published):
    with pytest.raises(ValueError, match="top1_low"):
        compare_with_published(leaderboard_rows([{}]).drop("top1_low"), published, mapping={}, datasets={})


def test_compared_leaderboard_is_rejected(published):
    mapping, datasets = {"efficientnet_lite0": "tf_efficientnet_lite0.in1k"}, {"imagenet-val": "imagenet-val"}
    compared = compare_with_published(leaderboard_rows([{}]), published, mapping=mapping, datasets=datasets)

    with pytest.raises(ValueError, match="compare it only once"):
        compare_with_published(compared, published, mapping=mapping, datasets=datasets)


def test_comparison_keeps_leaderboard_order(published):
    models = [f"model_{index}" for index in range(50)]
    leaderboard = leaderboard_rows([{"model": model} for model in models])

    compared = compare_with_published(
        leaderboard, published, mapping={"model_7": "tf_efficientnet_lite0.in1k"}, datasets={"imagenet-val": "imagenet-val"}
    )

    assert compared["model"].to_list() == models
    assert compared.filter(pl.col("published_model").is_not_null())["model"].to_list() == ["model_7"]


def test_mapping_and_datasets_come_from_config():
    config = {
        "models": {"a": {"published_as": "tf_efficientnet_lite0.in1k"}, "b": {}},
        "datasets": {"val": {"published_dataset": "imagenet-val"}, "sample": {}},
    }

    assert published_mapping(config) == {"a": "tf_efficientnet_lite0.in1k"}
    assert published_datasets(config) == {"val": "imagenet-val"}


def test_unknown_published_names_are_rejected(published):
    with pytest.raises(ConfigError, match=r"models\.a\.published_as: 'resnet50' is not a model") as raised:
        check_published_names(mapping={"a": "resnet50"}, datasets={"val": "imagenet-2012"}, published=published)

    assert "datasets.val.published_dataset: 'imagenet-2012'" in str(raised.value)


def test_known_published_names_pass(published):
    check_published_names(
        mapping={"a": "tf_efficientnet_lite0.in1k"}, datasets={"val": "imagenet-val"}, published=published
    )


def test_points_mark_measured_and_published(published):
    leaderboard = leaderboard_rows([{"dataset": "imagenet-sample"}, {"model": "broken", "valid": False}])

    points = comparison_points(leaderboard, published)

    assert set(points["source"]) == {MEASURED, PUBLISHED}
    measured = points.filter(pl.col("source") == MEASURED)
    assert measured["entry"].cast(pl.String).unique().to_list() == ["efficientnet_lite0 (imagenet-sample)"]
    assert measured["low"].is_not_null().all()
    assert points.filter(pl.col("source") == PUBLISHED)["low"].is_null().all()
    assert "human_trained_annotator (ilsvrc2012-test-1500)" not in points["entry"].cast(pl.String).to_list()


def test_human_baseline_is_on_top5_only(published):
    human = human_baselines(published)

    assert human["metric"].to_list() == ["top-5"]
    assert human["accuracy"].to_list() == [pytest.approx(94.9)]
    assert human["label"].to_list() == ["human (Russakovsky et al. 2015): 94.9%"]


def test_figure_is_written(tmp_path, published):
    settings = FigureSettings(width=6, height=4, dpi=60)
    figure = plot_published(leaderboard_rows([{"dataset": "imagenet-sample"}]), published, settings)

    for suffix in ("png", "svg"):
        path = tmp_path / f"published.{suffix}"
        save_figure(figure, path, settings)
        assert path.stat().st_size > 0
    assert MEASURED in (tmp_path / "published.svg").read_text()


def test_figure_legend_names_both_kinds(tmp_path, published):
    settings = FigureSettings(width=6, height=4, dpi=60)
    save_figure(plot_published(leaderboard_rows([{}]), published, settings), tmp_path / "figure.svg", settings)

    text = (tmp_path / "figure.svg").read_text()
    assert "measured (95% CI)" in text
    assert "published" in text
