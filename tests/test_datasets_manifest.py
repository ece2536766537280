"""Tests of building, writing and reading dataset manifests."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from helpers_datasets import (
    SAMPLE_DIR,
    labels_by_content,
    labels_by_source,
    make_imagefolder,
    make_imagenetv2,
    make_synset_files,
    make_val_folder,
    number_val_images,
    pick_images,
    real_labels_for_fixture,
    sample_images,
    write_loc_val_solution,
    write_real_labels,
)
from imagebench.datasets import LAYOUTS, build_manifest, class_mask_for, read_manifest, write_manifest
from imagebench.datasets.classes import imagenet_synsets
from imagebench.errors import DatasetError
from imagebench.io import read_parquet_metadata, write_parquet_atomic


def test_build_sample_synset_files():
    images = sample_images()

    frame = build_manifest(root=SAMPLE_DIR, layout="synset-files", num_shards=7)

    assert frame.columns == ["image_id", "path", "synset", "label", "shard"]
    assert frame.schema["label"] == pl.Int32
    assert frame.schema["shard"] == pl.Int32
    assert frame.height == len(images) == 500
    assert frame["path"].to_list() == sorted(image.source.name for image in images)
    assert frame["image_id"].to_list() == [path.removesuffix(".JPEG") for path in frame["path"]]
    assert frame["label"].to_list() == [imagenet_synsets().index(synset) for synset in frame["synset"]]
    assert frame["shard"].to_list() == [row % 7 for row in range(500)]


def test_build_labels_use_timm_order_not_folder_order(tmp_path):
    # A folder with classes 0 and 300 only: a sorted-folder index would give them labels 0 and 1.
    images = [image for image in pick_images() if image.label in (0, 300)]
    root = make_imagefolder(tmp_path / "data", images)

    frame = build_manifest(root=root, layout="imagefolder", num_shards=1)

    assert frame["label"].to_list() == [0, 300]
    assert frame["synset"].to_list() == [imagenet_synsets()[0], imagenet_synsets()[300]]


def test_build_is_deterministic(tmp_path):
    root = make_synset_files(tmp_path / "data", pick_images())

    first = build_manifest(root=root, layout="synset-files", num_shards=3)
    second = build_manifest(root=root, layout="synset-files", num_shards=3)

    assert_frame_equal(first, second)


def test_build_layouts_agree_on_labels(tmp_path):
    images = pick_images()
    expected = labels_by_source(images)
    numbered = number_val_images(images)
    val_root = make_val_folder(tmp_path / "val", numbered)
    write_loc_val_solution(val_root / "LOC_val_solution.csv", numbered)
    roots = {
        "synset-files": make_synset_files(tmp_path / "flat", images),
        "imagefolder": make_imagefolder(tmp_path / "folders", images),
        "imagenetv2": make_imagenetv2(tmp_path / "v2", images),
        "ilsvrc-val": val_root,
    }

    for layout, root in roots.items():
        frame = build_manifest(root=root, layout=layout, num_shards=2)
        assert labels_by_content(root, frame) == expected, layout


def test_build_with_real_labels(tmp_path):
    numbered = number_val_images(pick_images())
    root = make_val_folder(tmp_path / "val", numbered)
    write_loc_val_solution(root / "LOC_val_solution.csv", numbered)
    entries = real_labels_for_fixture(numbered)
    real_file = write_real_labels(tmp_path / "real.json", entries)

    frame = build_manifest(root=root, layout="ilsvrc-val", num_shards=2, real_labels_file=real_file)

    assert frame.columns[-1] == "real_labels"
    assert frame.schema["real_labels"] == pl.List(pl.Int32)
    assert frame["real_labels"].null_count() == 0
    assert frame["real_labels"].to_list() == [entries[number - 1] for number in sorted(numbered)]
    assert [] in frame["real_labels"].to_list()


def test_write_read_round_trip(tmp_path):
    frame = build_manifest(root=make_synset_files(tmp_path / "data", pick_images()), layout="synset-files", num_shards=4)
    path = tmp_path / "out" / "manifest.parquet"

    write_manifest(frame, path, layout="synset-files", num_shards=4)
    read_frame, metadata = read_manifest(path)

    assert_frame_equal(read_frame, frame)
    assert metadata == {
        "manifest_version": "1",
        "layout": "synset-files",
        "num_shards": 4,
        "num_classes": frame["label"].n_unique(),
        "class_mask": None,
    }
    assert list(path.parent.iterdir()) == [path]


def test_write_read_class_mask(tmp_path):
    images = pick_images()
    root = make_imagefolder(tmp_path / "data", images)
    frame = build_manifest(root=root, layout="imagefolder", num_shards=2)
    mask = class_mask_for(frame, "imagefolder", class_subset=True)
    path = tmp_path / "manifest.parquet"

    write_manifest(frame, path, layout="imagefolder", num_shards=2, class_mask=mask)
    _, metadata = read_manifest(path)

    assert mask == sorted({image.label for image in images})
    assert metadata["class_mask"] == mask
    assert json.loads(read_parquet_metadata(path)["class_mask"]) == mask


def test_write_read_real_labels(tmp_path):
    numbered = number_val_images(pick_images())
    root = make_val_folder(tmp_path / "val", numbered)
    write_loc_val_solution(root / "LOC_val_solution.csv", numbered)
    real_file = write_real_labels(tmp_path / "real.json", real_labels_for_fixture(numbered))
    frame = build_manifest(root=root, layout="ilsvrc-val", num_shards=2, real_labels_file=real_file)
    path = tmp_path / "manifest.parquet"

    write_manifest(frame, path, layout="ilsvrc-val", num_shards=2)
    read_frame, _ = read_manifest(path)

    assert_frame_equal(read_frame, frame)


def test_class_mask_only_when_declared(tmp_path):
    frame = build_manifest(root=make_synset_files(tmp_path / "data", pick_images()), layout="synset-files", num_shards=1)

    # A partial copy of a full dataset is scored against all 1,000 classes.
    for layout in ("synset-files", "ilsvrc-val", "imagenetv2", "imagefolder"):
        assert class_mask_for(frame, layout) is None
    assert class_mask_for(frame, "imagefolder", class_subset=True) == sorted(frame["label"].unique().to_list())
    with pytest.raises(DatasetError, match="only imagefolder datasets can be class subsets"):
        class_mask_for(frame, "synset-files", class_subset=True)


def test_class_mask_none_for_all_classes():
    frame = pl.DataFrame({"label": list(range(1000))}, schema={"label": pl.Int32})

    assert class_mask_for(frame, "imagefolder", class_subset=True) is None


def test_write_rejects_mask_missing_classes(tmp_path):
    frame = build_manifest(root=make_imagefolder(tmp_path / "data", pick_images()), layout="imagefolder", num_shards=1)
    mask = class_mask_for(frame, "imagefolder", class_subset=True)

    with pytest.raises(DatasetError, match="class_mask leaves out 1 classes"):
        write_manifest(frame, tmp_path / "m.parquet", layout="imagefolder", num_shards=1, class_mask=mask[1:])
    with pytest.raises(DatasetError, match="sorted, unique class indices"):
        write_manifest(frame, tmp_path / "m.parquet", layout="imagefolder", num_shards=1, class_mask=mask[::-1])
    assert not (tmp_path / "m.parquet").exists()


def test_write_rejects_wrong_shards(tmp_path):
    frame = build_manifest(root=make_synset_files(tmp_path / "data", pick_images()), layout="synset-files", num_shards=4)

    with pytest.raises(DatasetError, match="outside 0..1 for num_shards=2"):
        write_manifest(frame, tmp_path / "m.parquet", layout="synset-files", num_shards=2)


def test_write_rejects_wrong_columns(tmp_path):
    frame = build_manifest(root=make_synset_files(tmp_path / "data", pick_images()), layout="synset-files", num_shards=1)

    with pytest.raises(DatasetError, match="expected image_id"):
        write_manifest(frame.drop("synset"), tmp_path / "m.parquet", layout="synset-files", num_shards=1)
    with pytest.raises(DatasetError, match="label \\(Int64\\)"):
        write_manifest(frame.cast({"label": pl.Int64}), tmp_path / "m.parquet", layout="synset-files", num_shards=1)
    with pytest.raises(DatasetError, match="unknown layout 'folders'"):
        write_manifest(frame, tmp_path / "m.parquet", layout="folders", num_shards=1)


def test_read_rejects_plain_parquet(tmp_path):
    path = tmp_path / "other.parquet"
    write_parquet_atomic(pl.DataFrame({"path": ["a.JPEG"]}), path)

    with pytest.raises(DatasetError, match="lacks the manifest metadata"):
        read_manifest(path)
    with pytest.raises(DatasetError, match="does not exist"):
        read_manifest(tmp_path / "missing.parquet")


@pytest.mark.parametrize("num_shards", [0, -1, 1.5, True])
def test_build_rejects_invalid_num_shards(num_shards):
    with pytest.raises(DatasetError, match="num_shards is"):
        build_manifest(root=SAMPLE_DIR, layout="synset-files", num_shards=num_shards)


def test_build_rejects_more_shards_than_images(tmp_path):
    root = make_synset_files(tmp_path / "data", pick_images()[:3])

    with pytest.raises(DatasetError, match="num_shards is 4 but .* has only 3 images. Set num_shards to at most 3"):
        build_manifest(root=root, layout="synset-files", num_shards=4)


def test_build_rejects_unknown_layout():
    with pytest.raises(DatasetError) as error:
        build_manifest(root=SAMPLE_DIR, layout="image-folder", num_shards=1)

    assert "unknown layout 'image-folder'" in str(error.value)
    for layout in LAYOUTS:
        assert layout in str(error.value)


def test_build_rejects_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=f"dataset root {tmp_path / 'absent'} does not exist"):
        build_manifest(root=tmp_path / "absent", layout="synset-files", num_shards=1)


def test_build_rejects_empty_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.txt").write_text("no images here\n")

    for layout in LAYOUTS:
        with pytest.raises(DatasetError, match="no images \\(.jpeg, .jpg, .png\\) found"):
            build_manifest(root=tmp_path / "empty", layout=layout, num_shards=1)


def test_empty_dataset_error_suggests_layout(tmp_path):
    images = pick_images()[:2]
    flat = make_synset_files(tmp_path / "flat", images)
    folders = make_imagefolder(tmp_path / "folders", images)

    with pytest.raises(DatasetError, match="use layout 'synset-files' or 'ilsvrc-val'"):
        build_manifest(root=flat, layout="imagefolder", num_shards=1)
    with pytest.raises(DatasetError, match="use layout 'imagefolder'"):
        build_manifest(root=folders, layout="synset-files", num_shards=1)


def test_build_rejects_options_of_other_layouts(tmp_path):
    label_file = tmp_path / "LOC_val_solution.csv"
    label_file.write_text("ImageId,PredictionString\n")

    with pytest.raises(DatasetError, match="label_file .* is used only by layout 'ilsvrc-val'"):
        build_manifest(root=SAMPLE_DIR, layout="synset-files", num_shards=1, label_file=label_file)
    with pytest.raises(DatasetError, match="class_map_file .* is used only by layouts"):
        build_manifest(root=SAMPLE_DIR, layout="imagenetv2", num_shards=1, class_map_file=label_file)
    with pytest.raises(DatasetError, match="unknown expect 'imagenet'"):
        build_manifest(root=SAMPLE_DIR, layout="synset-files", num_shards=1, expect="imagenet")


def test_build_rejects_missing_files(tmp_path):
    missing = tmp_path / "real.json"

    with pytest.raises(DatasetError, match=f"real_labels_file {missing} does not exist"):
        build_manifest(root=SAMPLE_DIR, layout="synset-files", num_shards=1, real_labels_file=missing)


def test_build_rejects_duplicate_image_ids(tmp_path):
    image = pick_images()[0]
    root = make_synset_files(tmp_path / "data", [image])
    (root / image.source.name.replace(".JPEG", ".png")).symlink_to(image.source)

    with pytest.raises(DatasetError, match="2 files share an image id"):
        build_manifest(root=root, layout="synset-files", num_shards=1)


def test_build_expect_guard(tmp_path):
    root = make_imagenetv2(tmp_path / "v2", pick_images())

    with pytest.raises(DatasetError, match="dataset does not match expect='imagenetv2'"):
        build_manifest(root=root, layout="imagenetv2", num_shards=1, expect="imagenetv2")


def test_build_relative_posix_paths(tmp_path):
    images = pick_images()[:3]
    root = make_imagefolder(tmp_path / "data", images)
    nested = root / images[0].synset / "extra" / "deeper.jpg"
    nested.parent.mkdir()
    nested.symlink_to(images[0].source)

    frame = build_manifest(root=root, layout="imagefolder", num_shards=1)

    expected_path = f"{images[0].synset}/extra/deeper.jpg"
    assert expected_path in frame["path"].to_list()
    assert f"{images[0].synset}/extra/deeper" in frame["image_id"].to_list()
    assert all(not Path(path).is_absolute() for path in frame["path"])
