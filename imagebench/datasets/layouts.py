"""Scanners that list the images of a dataset folder and label them by its layout.

Each scanner returns image paths relative to the dataset root, in POSIX form, so that a
manifest built on one machine reads the same on another.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imagebench.datasets.classes import NUM_CLASSES, label_for_synset
from imagebench.errors import DatasetError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpg", ".png"})

# ImageNetV2 names its class folders by class index in decimal, without leading zeros.
_CLASS_INDEX_FOLDER = re.compile(r"0|[1-9]\d*")
_SYNSET_FILE_NAME = re.compile(r"(n\d{8})_.*")

# Number of offending names that an error message lists before it only counts the rest.
_EXAMPLES_SHOWN = 5


@dataclass(frozen=True)
class LabeledImage:
    """One image: its path relative to the dataset root (POSIX) and its ImageNet class index."""

    path: str
    label: int


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_flat_images(root: Path) -> list[str]:
    """Return the names of the image files directly in ``root``, sorted, ignoring hidden files."""
    names = []
    unreadable = []
    for entry in os.scandir(root):
        if not is_image_name(entry.name):
            continue
        if entry.is_file():
            names.append(entry.name)
        else:
            # Broken links, FIFOs, devices and folders: images the manifest would lose without a word.
            unreadable.append(entry.name)
    _warn_unreadable(root, unreadable)
    return sorted(names)


def list_class_folders(root: Path) -> list[str]:
    """Return the names of the non-hidden subfolders of ``root``, sorted as strings."""
    folders = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    stray = list_flat_images(root)
    if folders and stray:
        logger.warning(
            "ignoring %d image files directly in %s (first: %s): this layout reads images only "
            "from class folders",
            len(stray),
            root,
            stray[0],
        )
    return folders


def list_images_below(root: Path, folder: str) -> list[str]:
    """Return the image paths under ``root/folder``, recursively and relative to ``root``.

    Symbolic links to folders are followed, as torchvision's ImageFolder does. Hidden
    files and folders are skipped.
    """
    paths = []
    unreadable = []
    for directory, subdirectories, names in os.walk(root / folder, followlinks=True):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        relative_directory = Path(directory).relative_to(root).as_posix()
        for name in names:
            if not is_image_name(name):
                continue
            if os.path.isfile(os.path.join(directory, name)):
                paths.append(f"{relative_directory}/{name}")
            else:
                unreadable.append(f"{relative_directory}/{name}")
    _warn_unreadable(root, unreadable)
    return sorted(paths)


def scan_synset_files(root: Path) -> list[LabeledImage]:
    """Label images named ``<synset>_<anything>.<ext>`` directly in ``root`` by their synset prefix."""
    names = list_flat_images(root)
    unnamed = [name for name in names if not _SYNSET_FILE_NAME.fullmatch(os.path.splitext(name)[0])]
    if unnamed:
        raise DatasetError(
            f"{len(unnamed)} image files in {root} do not start with a synset and an underscore "
            f"(like n01440764_tench.JPEG), first: {format_examples(unnamed)}. Rename or remove them, or use "
            "layout 'imagefolder' or 'ilsvrc-val' if the folder has that layout."
        )

    images = []
    for name in names:
        synset = _SYNSET_FILE_NAME.fullmatch(os.path.splitext(name)[0]).group(1)
        images.append(LabeledImage(path=name, label=label_for_synset(synset, source=f"file {root / name}")))
    return images


def scan_imagefolder(
    root: Path, *, class_map: dict[str, int] | None, class_map_file: Path | None
) -> list[LabeledImage]:
    """Label images in ``root/<folder>/...`` by folder name: a synset, or a key of ``class_map``."""
    folders = list_class_folders(root)
    images = []
    for folder in folders:
        label = _label_for_folder(root, folder, class_map=class_map, class_map_file=class_map_file)
        images.extend(LabeledImage(path=path, label=label) for path in _images_of_class(root, folder))

    if class_map is not None:
        unused = sorted(set(class_map) - set(folders))
        if unused:
            logger.warning(
                "%d folders named in class map %s are not in %s (first: %s)",
                len(unused),
                class_map_file,
                root,
                format_examples(unused),
            )
    return images


def scan_imagenetv2(root: Path) -> list[LabeledImage]:
    """Label images in ``root/<class index>/...``, reading each folder name as a decimal integer.

    Sorting the folder names as strings would put "10" and "100" before "2", so the label
    is the number in the name and never the folder's position in a listing.
    """
    images = []
    for folder in list_class_folders(root):
        if not _CLASS_INDEX_FOLDER.fullmatch(folder) or int(folder) >= NUM_CLASSES:
            raise DatasetError(
                f"folder {root / folder} is not a class index: layout 'imagenetv2' expects folders "
                f"named 0 to {NUM_CLASSES - 1} without leading zeros. Remove or rename the folder, or "
                "use layout 'imagefolder' for folders named by synset."
            )
        images.extend(LabeledImage(path=path, label=int(folder)) for path in _images_of_class(root, folder))
    return images


def _label_for_folder(root: Path, folder: str, *, class_map: dict[str, int] | None, class_map_file: Path | None) -> int:
    if class_map is None:
        return label_for_synset(folder, source=f"folder {root / folder}")

    if folder not in class_map:
        raise DatasetError(
            f"folder {root / folder} is not in class map {class_map_file}: add a row for "
            f"{folder!r} with its ImageNet synset or class index, or remove the folder."
        )
    return class_map[folder]


def _images_of_class(root: Path, folder: str) -> list[str]:
    paths = list_images_below(root, folder)
    if not paths:
        logger.warning("class folder %s contains no images (.jpeg, .jpg, .png)", root / folder)
    return paths


def _warn_unreadable(root: Path, names: list[str]) -> None:
    if names:
        logger.warning(
            "skipping %d image names in %s that are not files, such as broken symbolic links (first: %s)",
            len(names),
            root,
            format_examples(sorted(names)),
        )


def format_examples(names: Sequence[str]) -> str:
    """Join the first few names for an error message, with '...' when there are more."""
    joined = ", ".join(names[:_EXAMPLES_SHOWN])
    return joined if len(names) <= _EXAMPLES_SHOWN else f"{joined}, ..."
