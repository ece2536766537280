"""Tests of ILSVRC2012 validation labels: Kaggle CSV, devkit ground truth with meta.mat, and ReaL."""

from __future__ import annotations

import json

import pytest

from helpers_datasets import (
    devkit_synset_order,
    labels_by_content,
    labels_by_source,
    link,
    make_val_folder,
    number_val_images,
    pick_images,
    real_labels_for_fixture,
    val_name,
    write_ground_truth,
    write_loc_val_solution,
    write_meta_mat,
    write_real_labels,
)
from imagebench.datasets import build_manifest
from imagebench.datasets.classes import imagenet_synsets
from imagebench.datasets.ilsvrc import read_devkit_synsets, val_image_number
from imagebench.errors import DatasetError


@pytest.fixture
def numbered():
    return number_val_images(pick_images())


@pytest.fixture
def val_root(tmp_path, numbered):
    return make_val_folder(tmp_path / "val", numbered)


@pytest.fixture
def devkit(tmp_path, numbered):
    """A devkit data folder: ground truth and meta.mat whose ID order is not the sorted order."""
    data = tmp_path / "devkit" / "data"
    data.mkdir(parents=True)
    order = devkit_synset_order()
    write_meta_mat(data / "meta.mat", order)
    write_ground_truth(data / "ILSVRC2012_validation_ground_truth.txt", numbered, order)
    return data


def test_val_image_number():
    assert val_image_number("ILSVRC2012_val_00000001.JPEG") == 1
    assert val_image_number("n01440764/ILSVRC2012_val_00049999.JPEG") == 49999
    assert val_image_number("ILSVRC2012_val_1.JPEG") is None
    assert val_image_number("n01440764_tench.JPEG") is None


def test_csv_labels(val_root, numbered):
    write_loc_val_solution(val_root / "LOC_val_solution.csv", numbered)

    frame = build_manifest(root=val_root, layout="ilsvrc-val", num_shards=2)

    assert frame["path"].to_list() == [val_name(number) for number in sorted(numbered)]
    assert frame["image_id"].to_list() == [val_name(number).removesuffix(".JPEG") for number in sorted(numbered)]
    assert frame["label"].to_list() == [numbered[number].label for number in sorted(numbered)]
    assert frame["synset"].to_list() == [numbered[number].synset for number in sorted(numbered)]


def test_csv_in_parent_folder(tmp_path, val_root, numbered):
    write_loc_val_solution(tmp_path / "LOC_val_solution.csv", numbered)

    frame = build_manifest(root=val_root, layout="ilsvrc-val", num_shards=1)

    assert frame["label"].to_list() == [numbered[number].label for number in sorted(numbered)]


def test_csv_given_explicitly(tmp_path, val_root, numbered):
    (tmp_path / "labels").mkdir()
    label_file = write_loc_val_solution(tmp_path / "labels" / "solution.csv", numbered)

    frame = build_manifest(root=val_root, layout="ilsvrc-val", num_shards=1, label_file=label_file)

    assert frame.height == len(numbered)


def test_missing_label_file(val_root):
    with pytest.raises(DatasetError, match="no label file for layout 'ilsvrc-val'.*Pass label_file"):
        build_manifest(root=val_root, layout="ilsvrc-val", num_shards=1)


def test_image_missing_from_csv(val_root, numbered):
    write_loc_val_solution(val_root / "LOC_val_solution.csv", numbered)
    link(numbered[1].source, val_root / val_name(999))

    with pytest.raises(DatasetError, match="1 images in .* are missing from label file .*ILSVRC2012_val_00000999"):
        build_manifest(root=val_root, layout="ilsvrc-val", num_shards=1)


def test_csv_row_without_image(val_root, numbered):
    write_loc_val_solution(val_root / "LOC_val_solution.csv", numbered)
    (val_root / val_name(2)).unlink()

    with pytest.raises(DatasetError, match="lists 1 images that are not in .*ILSVRC2012_val_00000002"):
        build_manifest(root=val_root, layout="ilsvrc-val", num_shards=1)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("ImageId,Label\nILSVRC2012_val_00000001,n01440764\n", "not the header ImageId,PredictionString"),
        ("ImageId,PredictionString\nILSVRC2012_val_00000001,n01440764 1 2\n", "Expected one or more"),
        ("ImageId,PredictionString\nILSVRC2012_val_00000001,\n", "Expected one or more"),
        ("ImageId,PredictionString\nILSVRC2012_val_00000001,n01440764 1 2 3 4 n01443537 1 2 3 4\n", "boxes of several synsets"),
        ("ImageId,PredictionString\nILSVRC2012_val_00000001,n99999999 1 2 3 4\n", "unknown synset 'n99999999' in label file .*line 2"),
        (
            "ImageId,PredictionString\nILSVRC2012_val_00000001,n01440764 1 2 3 4\nILSVRC2012_val_00000001,n01440764 1 2 3 4\n",
            "lists image ILSVRC2012_val_00000001 twice",
        ),
    ],
)
def test_malformed_csv(tmp_path, numbered, content, message):
    root = make_val_folder(tmp_path / "val", {1: numbered[1]})
    (root / "LOC_val_solution.csv").write_text(content)

    with pytest.raises(DatasetError, match=message):
        build_manifest(root=root, layout="ilsvrc-val", num_shards=1)


def test_devkit_labels_with_meta_mat(val_root, numbered, devkit):
    frame = build_manifest(
        root=val_root,
        layout="ilsvrc-val",
        num_shards=2,
        label_file=devkit / "ILSVRC2012_validation_ground_truth.txt",
    )

    assert frame["label"].to_list() == [numbered[number].label for number in sorted(numbered)]
    assert labels_by_content(val_root, frame) == labels_by_source(list(numbered.values()))


def test_devkit_ids_minus_one_are_not_labels(val_root, numbered, devkit):
    ground_truth = devkit / "ILSVRC2012_validation_ground_truth.txt"
    frame = build_manifest(root=val_root, layout="ilsvrc-val", num_shards=1, label_file=ground_truth)

    subtract_one = [int(line) - 1 for line in ground_truth.read_text().split()]

    assert all(wrong != right for wrong, right in zip(subtract_one, frame["label"], strict=True))


def test_devkit_labels_with_synset_list(tmp_path, val_root, numbered, devkit):
    synset_list = tmp_path / "synsets.txt"
    synset_list.write_text("".join(f"{synset} words of the class\n" for synset in devkit_synset_order()))

    frame = build_manifest(
        root=val_root,
        layout="ilsvrc-val",
        num_shards=1,
        label_file=devkit / "ILSVRC2012_validation_ground_truth.txt",
        class_map_file=synset_list,
    )

    assert frame["label"].to_list() == [numbered[number].label for number in sorted(numbered)]


def test_devkit_rejects_sorted_synset_list(tmp_path, val_root, devkit):
    # Kaggle's LOC_synset_mapping.txt lists synsets in sorted (class index) order, not devkit ID order.
    mapping = tmp_path / "LOC_synset_mapping.txt"
    mapping.write_text("".join(f"{synset} words\n" for synset in imagenet_synsets()))

    with pytest.raises(DatasetError, match="lists its synsets in sorted order.*meta.mat"):
        build_manifest(
            root=val_root,
            layout="ilsvrc-val",
            num_shards=1,
            label_file=devkit / "ILSVRC2012_validation_ground_truth.txt",
            class_map_file=mapping,
        )


def test_devkit_rejects_sorted_meta_mat(tmp_path):
    meta = write_meta_mat(tmp_path / "meta.mat", list(imagenet_synsets()))

    with pytest.raises(DatasetError, match="sorted order"):
        read_devkit_synsets(meta)


def test_devkit_meta_mat_keeps_inner_nodes(devkit):
    synsets_by_id = read_devkit_synsets(devkit / "meta.mat")

    assert len(synsets_by_id) == 1002
    assert [synsets_by_id[devkit_id] for devkit_id in range(1, 1001)] == devkit_synset_order()


def test_devkit_shuffled_map_caught_by_csv(tmp_path, val_root, numbered, devkit):
    write_loc_val_solution(tmp_path / "LOC_val_solution.csv", numbered)
    shuffled = devkit_synset_order()
    shuffled[0::2], shuffled[1::2] = shuffled[1::2], shuffled[0::2]
    synset_list = tmp_path / "shuffled.txt"
    synset_list.write_text("\n".join(shuffled) + "\n")

    with pytest.raises(DatasetError, match=f"differ from .*LOC_val_solution.csv for {len(numbered)} of {len(numbered)} images"):
        build_manifest(
            root=val_root,
            layout="ilsvrc-val",
            num_shards=1,
            label_file=devkit / "ILSVRC2012_validation_ground_truth.txt",
            class_map_file=synset_list,
        )


def test_devkit_agrees_with_csv(tmp_path, val_root, numbered, devkit):
    write_loc_val_solution(tmp_path / "LOC_val_solution.csv", numbered)

    frame = build_manifest(
        root=val_root, layout="ilsvrc-val", num_shards=1, label_file=devkit / "ILSVRC2012_validation_ground_truth.txt"
    )

    assert frame.height == len(numbered)


def test_devkit_needs_synset_map(tmp_path, val_root, numbered):
    ground_truth = write_ground_truth(tmp_path / "ILSVRC2012_validation_ground_truth.txt", numbered, devkit_synset_order())

    with pytest.raises(DatasetError, match="needs the devkit's synset map .*meta.mat does not exist"):
        build_manifest(root=val_root, layout="ilsvrc-val", num_shards=1, label_file=ground_truth)


def test_devkit_rejects_unnumbered_image(val_root, numbered, devkit):
    link(numbered[1].source, val_root / "extra.JPEG")

    with pytest.raises(DatasetError, match="not named ILSVRC2012_val_<8 digits> \\(first: extra.JPEG\\)"):
        build_manifest(
            root=val_root, layout="ilsvrc-val", num_shards=1, label_file=devkit / "ILSVRC2012_validation_ground_truth.txt"
        )


def test_devkit_image_beyond_ground_truth(val_root, numbered, devkit):
    link(numbered[1].source, val_root / val_name(len(numbered) + 1))

    with pytest.raises(DatasetError, match="missing from label file"):
        build_manifest(
            root=val_root, layout="ilsvrc-val", num_shards=1, label_file=devkit / "ILSVRC2012_validation_ground_truth.txt"
        )


def test_devkit_rejects_bad_ground_truth_line(val_root, numbered, devkit):
    ground_truth = devkit / "ILSVRC2012_validation_ground_truth.txt"
    lines = ground_truth.read_text().splitlines()
    lines[1] = "n01440764"
    ground_truth.write_text("\n".join(lines) + "\n")

    with pytest.raises(DatasetError, match="line 2 of ground truth .* is 'n01440764'"):
        build_manifest(root=val_root, layout="ilsvrc-val", num_shards=1, label_file=ground_truth)


def test_devkit_id_not_in_meta_mat(val_root, numbered, devkit):
    ground_truth = devkit / "ILSVRC2012_validation_ground_truth.txt"
    lines = ground_truth.read_text().splitlines()
    lines[0] = "5000"
    ground_truth.write_text("\n".join(lines) + "\n")

    with pytest.raises(DatasetError, match="ILSVRC2012_ID 5000, which synset file .*meta.mat does not list"):
        build_manifest(root=val_root, layout="ilsvrc-val", num_shards=1, label_file=ground_truth)


def test_unknown_label_file_format(tmp_path, val_root):
    label_file = tmp_path / "labels.json"
    label_file.write_text("{}")

    with pytest.raises(DatasetError, match="unknown format"):
        build_manifest(root=val_root, layout="ilsvrc-val", num_shards=1, label_file=label_file)


def test_real_labels_need_val_file_names(tmp_path, numbered):
    root = tmp_path / "flat"
    link(numbered[1].source, root / numbered[1].source.name)
    real_file = write_real_labels(tmp_path / "real.json", real_labels_for_fixture(numbered))

    with pytest.raises(DatasetError, match="has no ILSVRC2012 validation file name"):
        build_manifest(root=root, layout="synset-files", num_shards=1, real_labels_file=real_file)


def test_real_labels_in_imagefolder(tmp_path, numbered):
    root = tmp_path / "sorted-val"
    for number, image in numbered.items():
        link(image.source, root / image.synset / val_name(number))
    entries = real_labels_for_fixture(numbered)
    real_file = write_real_labels(tmp_path / "real.json", entries)

    frame = build_manifest(root=root, layout="imagefolder", num_shards=1, real_labels_file=real_file)

    for path, real_labels in frame.select("path", "real_labels").iter_rows():
        assert real_labels == entries[val_image_number(path) - 1]


def test_real_labels_shifted_file_caught(tmp_path, val_root, numbered):
    write_loc_val_solution(val_root / "LOC_val_solution.csv", numbered)
    entries = [[image.label] for image in numbered.values()] + [[] for _ in range(50_000 - len(numbered))]
    shifted = entries[1:] + entries[:1]
    real_file = write_real_labels(tmp_path / "real.json", shifted)

    with pytest.raises(DatasetError, match="contain the dataset's own label for only 0 of"):
        build_manifest(root=val_root, layout="ilsvrc-val", num_shards=1, real_labels_file=real_file)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([[1]] * 10, "has 10 entries, not a list of 50,000 lists"),
        ({"labels": []}, "has dict entries"),
        ([[1]] * 49_999 + [[1000]], "entry 49999 .* is \\[1000\\]"),
        ([[1]] * 49_999 + [None], "entry 49999 .* is None"),
        ([[1]] * 49_999 + [[True]], "entry 49999 .* is \\[True\\]"),
    ],
)
def test_real_labels_malformed(tmp_path, val_root, numbered, entries, message):
    write_loc_val_solution(val_root / "LOC_val_solution.csv", numbered)
    real_file = tmp_path / "real.json"
    real_file.write_text(json.dumps(entries))

    with pytest.raises(DatasetError, match=message):
        build_manifest(root=val_root, layout="ilsvrc-val", num_shards=1, real_labels_file=real_file)


def test_real_labels_invalid_json(tmp_path, val_root, numbered):
    write_loc_val_solution(val_root / "LOC_val_solution.csv", numbered)
    real_file = tmp_path / "real.json"
    real_file.write_text("[[1], [2")

    with pytest.raises(DatasetError, match="is not valid JSON"):
        build_manifest(root=val_root, layout="ilsvrc-val", num_shards=1, real_labels_file=real_file)
