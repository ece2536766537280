"""Builders of small real datasets for the manifest tests, made of links to the shared ImageNet sample.

Every builder takes the same list of SampleImage, so a test can read one set of images
through several layouts and compare the labels.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.io

from conftest import SAMPLE
from imagebench.datasets.classes import imagenet_synsets, synset_to_label
from imagebench.io import sha256_file

# The same folder as the conftest fixtures use, so that $IMAGEBENCH_SHARED_DATA moves both.
SAMPLE_DIR = SAMPLE

# Class indices in the sample whose decimal names sort differently as strings
# ("101" < "11" < "20" < "3" < "300") and as numbers.
STRING_SORT_TRAP_LABELS = (3, 11, 20, 101, 300)


@dataclass(frozen=True)
class SampleImage:
    """One image of the shared sample and its class."""

    source: Path
    synset: str
    label: int


def sample_images() -> list[SampleImage]:
    """Return every image of the shared sample, sorted by file name."""
    if not SAMPLE_DIR.is_dir():
        pytest.skip(f"the shared ImageNet sample is not at {SAMPLE_DIR}; set IMAGEBENCH_SHARED_DATA")

    images = []
    for source in sorted(SAMPLE_DIR.iterdir()):
        synset = source.name.split("_", 1)[0]
        images.append(SampleImage(source=source.resolve(), synset=synset, label=synset_to_label()[synset]))
    return images


def pick_images(count: int = 16) -> list[SampleImage]:
    """Return the first ``count`` sample images plus those of STRING_SORT_TRAP_LABELS."""
    images = sample_images()
    picked = images[:count] + [image for image in images if image.label in STRING_SORT_TRAP_LABELS]
    return sorted(set(picked), key=lambda image: image.label)


def link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source)


def make_synset_files(root: Path, images: list[SampleImage]) -> Path:
    for image in images:
        link(image.source, root / image.source.name)
    return root


def make_imagefolder(root: Path, images: list[SampleImage]) -> Path:
    for image in images:
        link(image.source, root / image.synset / image.source.name)
    return root


def make_imagenetv2(root: Path, images: list[SampleImage]) -> Path:
    # ImageNetV2 names files by a hash. A stem unrelated to the synset shows that the folder alone sets the label.
    for number, image in enumerate(images):
        link(image.source, root / str(image.label) / f"{number:040x}.jpeg")
    return root


def number_val_images(images: list[SampleImage]) -> dict[int, SampleImage]:
    """Give each image an ILSVRC2012 validation number, in reverse label order.

    Reverse order makes the file-name order differ from the class order, as in the real set.
    """
    ordered = sorted(images, key=lambda image: image.label, reverse=True)
    return {number: image for number, image in enumerate(ordered, start=1)}


def val_name(number: int) -> str:
    return f"ILSVRC2012_val_{number:08d}.JPEG"


def make_val_folder(root: Path, numbered: dict[int, SampleImage]) -> Path:
    for number, image in numbered.items():
        link(image.source, root / val_name(number))
    return root


def write_loc_val_solution(path: Path, numbered: dict[int, SampleImage]) -> Path:
    """Write a Kaggle LOC_val_solution.csv, with rows out of file order and two boxes on some images."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ImageId", "PredictionString"])
        for number in sorted(numbered, key=lambda number: (number * 7) % 11):
            synset = numbered[number].synset
            boxes = f"{synset} 10 20 110 220 " + (f"{synset} 5 5 50 50 " if number % 2 else "")
            writer.writerow([f"ILSVRC2012_val_{number:08d}", boxes])
    return path


def devkit_synset_order() -> list[str]:
    """Return the 1,000 synsets in a fixture devkit ILSVRC2012_ID order: ID k is element k-1.

    Sattolo's shuffle gives a single cycle, so no synset keeps its sorted position and
    reading an ID minus one as a class index is wrong for every class.
    """
    order = list(imagenet_synsets())
    generator = random.Random(2012)
    for index in range(len(order) - 1, 0, -1):
        other = generator.randrange(index)
        order[index], order[other] = order[other], order[index]
    return order


def write_meta_mat(path: Path, synsets_in_id_order: list[str]) -> Path:
    """Write a meta.mat shaped like the devkit's: a 'synsets' struct array, leaves first, then inner nodes."""
    leaves = [(devkit_id, synset, 0) for devkit_id, synset in enumerate(synsets_in_id_order, start=1)]
    inner_nodes = [(len(leaves) + 1, "n00001740", 3), (len(leaves) + 2, "n00002137", 2)]
    records = leaves + inner_nodes

    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")]
    synsets = np.zeros((len(records), 1), dtype=dtype)
    for row, (devkit_id, synset, num_children) in enumerate(records):
        synsets[row, 0] = (
            np.array([[devkit_id]], dtype=np.uint16),
            np.array([synset]),
            np.array([[num_children]], dtype=np.uint8),
        )
    scipy.io.savemat(path, {"synsets": synsets})
    return path


def write_ground_truth(path: Path, numbered: dict[int, SampleImage], synsets_in_id_order: list[str]) -> Path:
    devkit_ids = {synset: devkit_id for devkit_id, synset in enumerate(synsets_in_id_order, start=1)}
    lines = [str(devkit_ids[numbered[number].synset]) for number in range(1, len(numbered) + 1)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def real_labels_for_fixture(numbered: dict[int, SampleImage]) -> list[list[int]]:
    """Return a real.json list: every third image has no label, every other one an extra label."""
    entries: list[list[int]] = [[] for _ in range(50_000)]
    for number, image in numbered.items():
        if number % 3 == 0:
            continue
        entries[number - 1] = [image.label] if number % 2 else sorted({image.label, (image.label + 1) % 1000})
    return entries


def write_real_labels(path: Path, entries: list[list[int]]) -> Path:
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def labels_by_content(root: Path, frame: pl.DataFrame) -> dict[str, int]:
    """Map each manifest image's SHA-256 to its label, so layouts compare independently of paths."""
    return {sha256_file(root / path): label for path, label in frame.select("path", "label").iter_rows()}


def labels_by_source(images: list[SampleImage]) -> dict[str, int]:
    return {sha256_file(image.source): image.label for image in images}
