"""Dataset manifests: one row per image with its class and shard, stored as Parquet.

Columns, in order:
- ``image_id`` (String, unique): the path without its extension.
- ``path`` (String): relative to the dataset root, with ``/`` separators.
- ``synset`` (String): WordNet id, like ``n01440764``.
- ``label`` (Int32): class index in timm's ImageNet-1k class order.
- ``shard`` (Int32): row k of the path-sorted manifest goes to shard ``k % num_shards``.
- ``real_labels`` (List[Int32], only with a ReaL label file): class indices judged
  correct by ImageNet-ReaL. An empty list means that no label was judged correct.

The Parquet footer stores ``manifest_version``, ``layout``, ``num_shards``,
``num_classes`` (distinct classes present) and, for class subsets, ``class_mask``
(a JSON list of the class indices present).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from imagebench.datasets.classes import NUM_CLASSES, imagenet_synsets
from imagebench.datasets.class_map import read_class_map
from imagebench.datasets.expectations import check_expect_name, check_expectations
from imagebench.datasets.ilsvrc import default_label_file, label_val_images, real_labels_for
from imagebench.datasets.layouts import (
    LabeledImage,
    format_examples,
    list_class_folders,
    list_flat_images,
    scan_imagefolder,
    scan_imagenetv2,
    scan_synset_files,
)
from imagebench.errors import DatasetError
from imagebench.io import read_parquet_metadata, write_parquet_atomic

logger = logging.getLogger(__name__)

LAYOUTS = ("synset-files", "imagefolder", "ilsvrc-val", "imagenetv2")

# Layouts whose datasets may cover only part of the 1,000 classes on purpose (ImageNet-A
# and ImageNet-R have 200). The other layouts always use all 1,000 classes, so a partial
# copy of them is scored over all 1,000 logits.
SUBSET_LAYOUTS = frozenset({"imagefolder"})

MANIFEST_VERSION = "1"
MANIFEST_SCHEMA = pl.Schema(
    {
        "image_id": pl.String,
        "path": pl.String,
        "synset": pl.String,
        "label": pl.Int32,
        "shard": pl.Int32,
    }
)
REAL_LABELS_COLUMN = "real_labels"
REAL_LABELS_DTYPE = pl.List(pl.Int32)

_REQUIRED_METADATA = ("manifest_version", "layout", "num_shards", "num_classes")


def build_manifest(
    *,
    root: Path,
    layout: str,
    num_shards: int,
    label_file: Path | None = None,
    class_map_file: Path | None = None,
    real_labels_file: Path | None = None,
    expect: str | None = None,
) -> pl.DataFrame:
    """List and label the images under ``root`` by ``layout`` and assign them to shards.

    ``label_file`` is for layout 'ilsvrc-val' only: Kaggle's LOC_val_solution.csv
    (the default, looked up in ``root`` and then its parent) or the devkit's
    ILSVRC2012_validation_ground_truth.txt. ``class_map_file`` maps ImageFolder folder
    names to classes, or, with a devkit ground truth, devkit IDs to synsets (default: the
    ``meta.mat`` beside it). ``real_labels_file`` adds ImageNet-ReaL labels. ``expect``
    ('ilsvrc-val' or 'imagenetv2') names an evaluation set whose class counts the result must match.

    Raises DatasetError for any file or value that does not fit the layout.
    """
    root = Path(root)
    _check_options(
        root=root,
        layout=layout,
        num_shards=num_shards,
        label_file=label_file,
        class_map_file=class_map_file,
        real_labels_file=real_labels_file,
        expect=expect,
    )

    images = _scan(root=root, layout=layout, label_file=label_file, class_map_file=class_map_file)
    if not images:
        raise _empty_dataset_error(root, layout)
    if num_shards > len(images):
        raise DatasetError(
            f"num_shards is {num_shards} but {root} has only {len(images)} images. "
            f"Set num_shards to at most {len(images)}."
        )

    images = sorted(images, key=lambda image: image.path)
    frame = _frame_from_images(images, num_shards=num_shards)
    if real_labels_file is not None:
        real_labels = real_labels_for(images, real_labels_file=Path(real_labels_file))
        frame = frame.with_columns(pl.Series(REAL_LABELS_COLUMN, real_labels, dtype=REAL_LABELS_DTYPE))

    check_expectations(frame, expect)
    logger.info(
        "manifest of %d images in %d classes from %s (layout %s, %d shards)",
        frame.height,
        frame["label"].n_unique(),
        root,
        layout,
        num_shards,
    )
    return frame


def write_manifest(
    frame: pl.DataFrame,
    path: Path,
    *,
    layout: str,
    num_shards: int,
    class_mask: list[int] | None = None,
) -> None:
    """Check ``frame`` against the manifest schema and write it atomically to Parquet with its metadata."""
    _check_layout(layout)
    _check_frame(frame, num_shards=num_shards, source="the manifest to write")

    metadata = {
        "manifest_version": MANIFEST_VERSION,
        "layout": layout,
        "num_shards": str(num_shards),
        "num_classes": str(frame["label"].n_unique()),
    }
    if class_mask is not None:
        _check_class_mask(class_mask, frame)
        metadata["class_mask"] = json.dumps(class_mask)

    write_parquet_atomic(frame, path, metadata=metadata)


def read_manifest(path: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Read a manifest and its metadata, and check both.

    The metadata dict has ``layout`` (str), ``num_shards`` (int), ``num_classes`` (int),
    ``class_mask`` (list[int] or None) and ``manifest_version`` (str).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"manifest {path} does not exist. Build it with build_manifest and write_manifest.")

    stored = read_parquet_metadata(path)
    missing = [key for key in _REQUIRED_METADATA if key not in stored]
    if missing:
        raise DatasetError(
            f"{path} lacks the manifest metadata {', '.join(missing)}, so write_manifest did not write it. "
            "Rebuild the manifest."
        )
    if stored["manifest_version"] != MANIFEST_VERSION:
        raise DatasetError(
            f"manifest {path} has version {stored['manifest_version']}, but this imagebench reads version "
            f"{MANIFEST_VERSION}. Rebuild the manifest."
        )

    metadata: dict[str, Any] = {
        "manifest_version": stored["manifest_version"],
        "layout": stored["layout"],
        "num_shards": int(stored["num_shards"]),
        "num_classes": int(stored["num_classes"]),
        "class_mask": json.loads(stored["class_mask"]) if "class_mask" in stored else None,
    }
    frame = pl.read_parquet(path)
    _check_frame(frame, num_shards=metadata["num_shards"], source=f"manifest {path}")
    return frame, metadata


def class_mask_for(frame: pl.DataFrame, layout: str, *, class_subset: bool = False) -> list[int] | None:
    """Return the sorted class indices present when the dataset is a declared class subset.

    A mask restricts the logits that top-k compares to the dataset's own classes,
    as ImageNet-A and ImageNet-R (200 classes each) are scored. It is given only
    when the config declares ``class_subset: true``, for a layout in
    SUBSET_LAYOUTS, with fewer than 1,000 classes present. It is never inferred
    from the classes present, because a partial copy of the validation set
    must still be scored against all 1,000 classes.
    """
    _check_layout(layout)
    labels = frame["label"].unique().sort().to_list()
    if not class_subset or len(labels) == NUM_CLASSES:
        return None
    if layout not in SUBSET_LAYOUTS:
        raise DatasetError(
            f"class_subset is set for layout {layout!r}, but only {', '.join(sorted(SUBSET_LAYOUTS))} "
            "datasets can be class subsets; remove class_subset or use an imagefolder layout."
        )
    return labels


def _check_options(
    *,
    root: Path,
    layout: str,
    num_shards: int,
    label_file: Path | None,
    class_map_file: Path | None,
    real_labels_file: Path | None,
    expect: str | None,
) -> None:
    _check_layout(layout)
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise DatasetError(f"num_shards is {num_shards!r}. It must be an integer of at least 1.")
    check_expect_name(expect)
    if label_file is not None and layout != "ilsvrc-val":
        raise DatasetError(f"label_file {label_file} is used only by layout 'ilsvrc-val', not {layout!r}. Remove it.")
    if class_map_file is not None and layout not in ("imagefolder", "ilsvrc-val"):
        raise DatasetError(
            f"class_map_file {class_map_file} is used only by layouts 'imagefolder' and 'ilsvrc-val', "
            f"not {layout!r}. Remove it."
        )

    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a folder. Check the root path.")
    files = {"label_file": label_file, "class_map_file": class_map_file, "real_labels_file": real_labels_file}
    for name, file in files.items():
        if file is not None and not Path(file).is_file():
            raise DatasetError(f"{name} {file} does not exist. Check the path.")


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown layout {layout!r}. Allowed: {', '.join(LAYOUTS)}.")


def _scan(*, root: Path, layout: str, label_file: Path | None, class_map_file: Path | None) -> list[LabeledImage]:
    if layout == "synset-files":
        return scan_synset_files(root)
    if layout == "imagenetv2":
        return scan_imagenetv2(root)
    if layout == "imagefolder":
        class_map = read_class_map(Path(class_map_file)) if class_map_file is not None else None
        return scan_imagefolder(root, class_map=class_map, class_map_file=class_map_file)

    names = list_flat_images(root)
    if not names:
        return []
    label_file = Path(label_file) if label_file is not None else default_label_file(root)
    class_map_file = Path(class_map_file) if class_map_file is not None else None
    return label_val_images(root, names, label_file=label_file, class_map_file=class_map_file)


def _frame_from_images(images: Sequence[LabeledImage], *, num_shards: int) -> pl.DataFrame:
    synsets = imagenet_synsets()
    paths = [image.path for image in images]
    frame = pl.DataFrame(
        {
            "image_id": [path.rsplit(".", 1)[0] for path in paths],
            "path": paths,
            "synset": [synsets[image.label] for image in images],
            "label": [image.label for image in images],
            "shard": [row % num_shards for row in range(len(images))],
        },
        schema=MANIFEST_SCHEMA,
    )

    duplicated = frame.filter(pl.col("image_id").is_duplicated())
    if duplicated.height:
        raise DatasetError(
            f"{duplicated.height} files share an image id, the path without its extension (first: "
            f"{format_examples(duplicated['path'].to_list())}). Remove or rename one file of each pair."
        )
    return frame


def _check_frame(frame: pl.DataFrame, *, num_shards: int, source: str) -> None:
    expected = list(MANIFEST_SCHEMA.items())
    if REAL_LABELS_COLUMN in frame.columns:
        expected.append((REAL_LABELS_COLUMN, REAL_LABELS_DTYPE))
    actual = list(frame.schema.items())
    if actual != expected:
        raise DatasetError(
            f"{source} has columns {_describe_schema(actual)}, expected {_describe_schema(expected)}. "
            "Build it with build_manifest."
        )

    if frame.height == 0:
        raise DatasetError(f"{source} has no rows. Build it from a dataset with images.")
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise DatasetError(f"num_shards is {num_shards!r}. It must be an integer of at least 1.")
    shards = frame["shard"]
    if shards.min() < 0 or shards.max() >= num_shards:
        raise DatasetError(
            f"{source} has shards {shards.min()}..{shards.max()}, outside 0..{num_shards - 1} for "
            f"num_shards={num_shards}. Build it again with this num_shards."
        )
    if frame["image_id"].is_duplicated().any():
        raise DatasetError(f"{source} has duplicate image ids. Build it with build_manifest.")


def _check_class_mask(class_mask: list[int], frame: pl.DataFrame) -> None:
    valid = all(
        isinstance(label, int) and not isinstance(label, bool) and 0 <= label < NUM_CLASSES for label in class_mask
    )
    if not valid or class_mask != sorted(set(class_mask)):
        raise DatasetError(
            f"class_mask must be sorted, unique class indices 0..{NUM_CLASSES - 1}, got "
            f"{format_examples([str(label) for label in class_mask])}. Use class_mask_for."
        )

    outside = sorted(set(frame["label"].unique().to_list()) - set(class_mask))
    if outside:
        raise DatasetError(
            f"class_mask leaves out {len(outside)} classes that the manifest contains (first: "
            f"{format_examples([str(label) for label in outside])}), so those images could never be "
            "classified correctly. Use class_mask_for."
        )


def _describe_schema(columns: Sequence[tuple[str, pl.DataType]]) -> str:
    return ", ".join(f"{name} ({dtype})" for name, dtype in columns)


def _empty_dataset_error(root: Path, layout: str) -> DatasetError:
    hint = ""
    if layout in ("synset-files", "ilsvrc-val") and list_class_folders(root):
        hint = (
            " The root contains subfolders: use layout 'imagefolder' (synset folders) or "
            "'imagenetv2' (class-index folders)."
        )
    elif layout in ("imagefolder", "imagenetv2") and list_flat_images(root):
        hint = " The root contains image files directly: use layout 'synset-files' or 'ilsvrc-val'."
    return DatasetError(f"no images (.jpeg, .jpg, .png) found in {root} for layout {layout!r}.{hint}")
