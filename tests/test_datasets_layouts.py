"""Tests of the layout scanners through build_manifest, with real sample images."""

from __future__ import annotations

import logging

import pytest

from helpers_datasets import (
    STRING_SORT_TRAP_LABELS,
    link,
    make_imagefolder,
    make_imagenetv2,
    make_synset_files,
    pick_images,
)
from imagebench.datasets import build_manifest
from imagebench.datasets.layouts import is_image_name
from imagebench.errors import DatasetError


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("n01440764_tench.JPEG", True),
        ("a.jpeg", True),
        ("a.JpG", True),
        ("a.png", True),
        ("a.gif", False),
        ("LOC_val_solution.csv", False),
        (".n01440764_hidden.JPEG", False),
    ],
)
def test_is_image_name(name, expected):
    assert is_image_name(name) is expected


def test_synset_files_extensions_and_extras(tmp_path):
    images = pick_images()[:3]
    root = tmp_path / "data"
    link(images[0].source, root / f"{images[0].synset}_one.jpeg")
    link(images[1].source, root / f"{images[1].synset}_two.JPG")
    link(images[2].source, root / f"{images[2].synset}_three.png")
    link(images[2].source, root / f".{images[2].synset}_hidden.JPEG")
    (root / "README.md").write_text("notes\n")
    (root / "subfolder").mkdir()

    frame = build_manifest(root=root, layout="synset-files", num_shards=1)

    assert frame["path"].to_list() == sorted(
        [f"{images[0].synset}_one.jpeg", f"{images[1].synset}_two.JPG", f"{images[2].synset}_three.png"]
    )
    assert sorted(frame["label"].to_list()) == [image.label for image in images]


def test_synset_files_rejects_unknown_synset(tmp_path):
    root = make_synset_files(tmp_path / "data", pick_images()[:2])
    link(pick_images()[0].source, root / "n99999999_made_up.JPEG")

    with pytest.raises(DatasetError, match="unknown synset 'n99999999' in file .*n99999999_made_up.JPEG"):
        build_manifest(root=root, layout="synset-files", num_shards=1)


def test_synset_files_rejects_names_without_synset(tmp_path):
    root = make_synset_files(tmp_path / "data", pick_images()[:2])
    link(pick_images()[0].source, root / "ILSVRC2012_val_00000001.JPEG")

    with pytest.raises(DatasetError, match="1 image files .* do not start with a synset .*ILSVRC2012_val_00000001.JPEG"):
        build_manifest(root=root, layout="synset-files", num_shards=1)


def test_synset_files_skips_broken_links(tmp_path, caplog):
    images = pick_images()[:2]
    root = make_synset_files(tmp_path / "data", images)
    (root / f"{images[0].synset}_gone.JPEG").symlink_to(tmp_path / "nowhere.JPEG")

    with caplog.at_level(logging.WARNING):
        frame = build_manifest(root=root, layout="synset-files", num_shards=1)

    assert frame.height == 2
    assert "skipping 1 image names in" in caplog.text
    assert "_gone.JPEG" in caplog.text


def test_imagefolder_labels_by_folder_synset(tmp_path):
    images = pick_images()
    root = make_imagefolder(tmp_path / "data", images)

    frame = build_manifest(root=root, layout="imagefolder", num_shards=2)

    assert frame["path"].to_list() == sorted(f"{image.synset}/{image.source.name}" for image in images)
    assert dict(zip(frame["path"], frame["label"], strict=True)) == {
        f"{image.synset}/{image.source.name}": image.label for image in images
    }


def test_imagefolder_rejects_unknown_folder(tmp_path):
    root = make_imagefolder(tmp_path / "data", pick_images()[:2])
    link(pick_images()[0].source, root / "goldfish" / "a.JPEG")

    with pytest.raises(DatasetError, match="unknown synset 'goldfish' in folder .*goldfish.*class map file"):
        build_manifest(root=root, layout="imagefolder", num_shards=1)


def test_imagefolder_ignores_stray_files(tmp_path, caplog):
    images = pick_images()[:2]
    root = make_imagefolder(tmp_path / "data", images)
    link(images[0].source, root / "stray.JPEG")
    (root / images[1].synset / "notes.txt").write_text("not an image\n")
    (root / ".cache").mkdir()

    with caplog.at_level(logging.WARNING):
        frame = build_manifest(root=root, layout="imagefolder", num_shards=1)

    assert frame.height == 2
    assert "ignoring 1 image files directly in" in caplog.text


def test_imagefolder_warns_on_empty_class(tmp_path, caplog):
    root = make_imagefolder(tmp_path / "data", pick_images()[:2])
    (root / "n01443537").mkdir()

    with caplog.at_level(logging.WARNING):
        frame = build_manifest(root=root, layout="imagefolder", num_shards=1)

    assert frame.height == 2
    assert "n01443537 contains no images" in caplog.text


def test_imagefolder_with_csv_class_map(tmp_path):
    images = pick_images()[:3]
    root = tmp_path / "data"
    for number, image in enumerate(images):
        link(image.source, root / f"class_{number}" / image.source.name)
    class_map = tmp_path / "classes.csv"
    rows = [f"class_{number},{image.synset}" for number, image in enumerate(images)]
    class_map.write_text("folder,synset\n" + "\n".join(rows) + "\n")

    frame = build_manifest(root=root, layout="imagefolder", num_shards=1, class_map_file=class_map)

    assert frame["label"].to_list() == [image.label for image in images]
    assert frame["synset"].to_list() == [image.synset for image in images]


def test_imagefolder_with_json_class_map(tmp_path):
    images = pick_images()[:2]
    root = tmp_path / "data"
    link(images[0].source, root / "first" / "a.JPEG")
    link(images[1].source, root / "second" / "b.JPEG")
    link(images[1].source, root / "second_too" / "c.JPEG")
    class_map = tmp_path / "classes.json"
    class_map.write_text(f'{{"first": "{images[0].synset}", "second": {images[1].label}, "second_too": {images[1].label}}}')

    frame = build_manifest(root=root, layout="imagefolder", num_shards=1, class_map_file=class_map)

    assert frame["label"].to_list() == [images[0].label, images[1].label, images[1].label]


def test_imagefolder_rejects_folder_not_in_class_map(tmp_path):
    images = pick_images()[:2]
    root = tmp_path / "data"
    link(images[0].source, root / "first" / "a.JPEG")
    link(images[1].source, root / "second" / "b.JPEG")
    class_map = tmp_path / "classes.csv"
    class_map.write_text(f"folder,label\nfirst,{images[0].label}\n")

    with pytest.raises(DatasetError, match="folder .*second is not in class map .*classes.csv"):
        build_manifest(root=root, layout="imagefolder", num_shards=1, class_map_file=class_map)


def test_imagenetv2_reads_folder_names_as_numbers(tmp_path):
    # Folders 1, 10, 100, 2 sort as strings in that order, and their position must never become the label.
    images = pick_images()[:4]
    root = tmp_path / "v2"
    for folder, image in zip(["1", "10", "100", "2"], images, strict=True):
        link(image.source, root / folder / "image.jpeg")

    frame = build_manifest(root=root, layout="imagenetv2", num_shards=1)

    assert dict(zip(frame["path"], frame["label"], strict=True)) == {
        "1/image.jpeg": 1,
        "10/image.jpeg": 10,
        "100/image.jpeg": 100,
        "2/image.jpeg": 2,
    }


def test_imagenetv2_sample_classes(tmp_path):
    images = pick_images()
    root = make_imagenetv2(tmp_path / "v2", images)

    frame = build_manifest(root=root, layout="imagenetv2", num_shards=3)

    trap = frame.filter(frame["label"].is_in(STRING_SORT_TRAP_LABELS))
    assert sorted(trap["label"].to_list()) == list(STRING_SORT_TRAP_LABELS)
    for path, label, synset in trap.select("path", "label", "synset").iter_rows():
        assert path.split("/")[0] == str(label)
        assert synset == next(image.synset for image in images if image.label == label)


@pytest.mark.parametrize("folder", ["1000", "007", "n01440764", "-1"])
def test_imagenetv2_rejects_bad_folder(tmp_path, folder):
    root = make_imagenetv2(tmp_path / "v2", pick_images()[:2])
    link(pick_images()[0].source, root / folder / "x.jpeg")

    with pytest.raises(DatasetError, match=f"folder .*{folder} is not a class index"):
        build_manifest(root=root, layout="imagenetv2", num_shards=1)
