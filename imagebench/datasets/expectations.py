"""Guards that compare a manifest with the class counts that a known evaluation set has.

A label-order mistake (devkit IDs read as class indices, folders sorted as strings, a
shifted label file) usually leaves some classes with too many images and others with
none. Checking the counts catches such mistakes before any model runs. A mistake that
only permutes whole classes keeps every count and needs a label cross-check instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from imagebench.datasets.classes import NUM_CLASSES, imagenet_synsets
from imagebench.datasets.layouts import format_examples
from imagebench.errors import DatasetError


@dataclass(frozen=True)
class Expectation:
    """Class counts of a complete evaluation set over the ImageNet-1k classes."""

    num_classes: int
    images_per_class: int


EXPECTATIONS = {
    "ilsvrc-val": Expectation(num_classes=NUM_CLASSES, images_per_class=50),
    "imagenetv2": Expectation(num_classes=NUM_CLASSES, images_per_class=10),
}


def check_expect_name(expect: str | None) -> None:
    """Raise DatasetError unless ``expect`` is None or a key of EXPECTATIONS."""
    if expect is not None and expect not in EXPECTATIONS:
        raise DatasetError(
            f"unknown expect {expect!r}. Allowed: {', '.join(sorted(EXPECTATIONS))}, "
            "or None to check nothing."
        )


def check_expectations(frame: pl.DataFrame, expect: str | None) -> None:
    """Raise DatasetError unless ``frame`` has every class of ``expect`` with its image count.

    The message gives the number of missing classes, the classes whose image count is
    off, and the first few of each. ``expect=None`` checks nothing.
    """
    check_expect_name(expect)
    if expect is None:
        return

    expectation = EXPECTATIONS[expect]
    counts = dict(frame.group_by("label").len().iter_rows())
    synsets = imagenet_synsets()

    missing = [label for label in range(expectation.num_classes) if label not in counts]
    off = [(label, count) for label, count in sorted(counts.items()) if count != expectation.images_per_class]

    problems = []
    if missing:
        examples = format_examples([f"{synsets[label]} (class {label})" for label in missing])
        problems.append(f"{len(missing)} classes are missing (first: {examples})")
    if off:
        examples = format_examples([f"{synsets[label]} (class {label}) has {count}" for label, count in off])
        problems.append(f"{len(off)} classes do not have {expectation.images_per_class} images (first: {examples})")
    if not problems:
        return

    expected_total = expectation.num_classes * expectation.images_per_class
    raise DatasetError(
        f"dataset does not match expect={expect!r}, which is {expectation.num_classes:,} classes with "
        f"{expectation.images_per_class} images each ({expected_total:,} images). It has {frame.height:,} "
        f"images in {len(counts):,} classes. " + ". ".join(problems) + ". Check that the dataset is complete and "
        "that the layout and label file match it, or set expect to None for a partial copy."
    )
