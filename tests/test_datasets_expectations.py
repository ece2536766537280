"""Tests of the class-count guards for known evaluation sets."""

from __future__ import annotations

import polars as pl
import pytest

from helpers_datasets import link, pick_images
from imagebench.datasets import build_manifest, check_expectations
from imagebench.datasets.classes import imagenet_synsets
from imagebench.errors import DatasetError


def frame_with_counts(counts: dict[int, int]) -> pl.DataFrame:
    labels = [label for label, count in counts.items() for _ in range(count)]
    return pl.DataFrame({"label": labels}, schema={"label": pl.Int32})


def test_complete_sets_pass():
    check_expectations(frame_with_counts(dict.fromkeys(range(1000), 50)), "ilsvrc-val")
    check_expectations(frame_with_counts(dict.fromkeys(range(1000), 10)), "imagenetv2")
    check_expectations(frame_with_counts({0: 3}), None)


def test_missing_classes_named():
    counts = dict.fromkeys(range(1000), 50)
    del counts[0], counts[7], counts[999]

    with pytest.raises(DatasetError) as error:
        check_expectations(frame_with_counts(counts), "ilsvrc-val")

    message = str(error.value)
    assert "3 classes are missing" in message
    assert f"{imagenet_synsets()[0]} (class 0), {imagenet_synsets()[7]} (class 7)" in message
    assert "49,850 images in 997 classes" in message
    assert "do not have 50 images" not in message


def test_counts_off_named():
    # A label shifted for one image moves it from class 5 to class 6.
    counts = dict.fromkeys(range(1000), 50)
    counts[5], counts[6] = 49, 51

    with pytest.raises(DatasetError) as error:
        check_expectations(frame_with_counts(counts), "ilsvrc-val")

    message = str(error.value)
    assert "2 classes do not have 50 images" in message
    assert f"{imagenet_synsets()[5]} (class 5) has 49" in message
    assert f"{imagenet_synsets()[6]} (class 6) has 51" in message
    assert "missing" not in message


def test_merged_classes_caught():
    # Two folders mapped to one class, as a class map with a repeated synset would do.
    counts = dict.fromkeys(range(1000), 10)
    counts[2] += counts.pop(10)

    with pytest.raises(DatasetError, match="1 classes are missing .*1 classes do not have 10 images .*class 2\\) has 20"):
        check_expectations(frame_with_counts(counts), "imagenetv2")


def test_unknown_expectation():
    with pytest.raises(DatasetError, match="unknown expect 'imagenet-a'. Allowed: ilsvrc-val, imagenetv2"):
        check_expectations(frame_with_counts({0: 1}), "imagenet-a")


def test_build_imagenetv2_expect_guard(tmp_path):
    # 10,000 links to a few real images: the folder, not the image, sets the label.
    images = pick_images()
    root = tmp_path / "v2"
    for label in range(1000):
        for index in range(10):
            link(images[(label + index) % len(images)].source, root / str(label) / f"{index}.jpeg")

    frame = build_manifest(root=root, layout="imagenetv2", num_shards=8, expect="imagenetv2")

    assert frame.height == 10_000
    assert frame.filter(pl.col("path") == "100/3.jpeg")["label"].item() == 100

    (root / "500" / "9.jpeg").unlink()
    with pytest.raises(DatasetError, match="1 classes do not have 10 images .*\\(class 500\\) has 9"):
        build_manifest(root=root, layout="imagenetv2", num_shards=1, expect="imagenetv2")
