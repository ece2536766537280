"""The ImageNet-1k class order that every label index in imagebench refers to."""

from __future__ import annotations

import functools
import re

from imagebench.errors import DatasetError

# A WordNet noun synset id as ImageNet writes it: "n" and eight digits.
SYNSET_PATTERN = re.compile(r"n\d{8}")

NUM_CLASSES = 1000


@functools.cache
def imagenet_synsets() -> tuple[str, ...]:
    """Return the 1,000 ImageNet-1k synsets in timm's class order, which maps label index to synset.

    timm 1.0.31 lists them sorted by synset id. That order is the class order of the
    timm and torchvision checkpoints, and it differs from the devkit's ILSVRC2012_ID order.
    """
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_names())


@functools.cache
def synset_to_label() -> dict[str, int]:
    return {synset: label for label, synset in enumerate(imagenet_synsets())}


def label_for_synset(synset: str, *, source: str) -> int:
    """Return the class index of ``synset``, or raise DatasetError naming ``source``."""
    label = synset_to_label().get(synset)
    if label is None:
        raise DatasetError(
            f"unknown synset {synset!r} in {source}: it is not one of the {NUM_CLASSES} ImageNet-1k "
            "classes in timm's class list. Rename or remove the file, or map it to an ImageNet "
            "synset with a class map file."
        )
    return label


def synset_for_label(label: int, *, source: str) -> str:
    """Return the synset of class index ``label``, or raise DatasetError naming ``source``."""
    if not 0 <= label < NUM_CLASSES:
        raise DatasetError(
            f"class index {label} in {source} is outside 0..{NUM_CLASSES - 1}. "
            "ImageNet-1k class indices start at 0."
        )
    return imagenet_synsets()[label]
