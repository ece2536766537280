"""Dataset manifests: list the images of an evaluation set, label them in timm's class order, shard them."""

from imagebench.datasets.expectations import EXPECTATIONS, check_expectations
from imagebench.datasets.git_source import fetch_git_dataset
from imagebench.datasets.manifest import (
    LAYOUTS,
    build_manifest,
    class_mask_for,
    read_manifest,
    write_manifest,
)

__all__ = [
    "EXPECTATIONS",
    "LAYOUTS",
    "build_manifest",
    "check_expectations",
    "class_mask_for",
    "fetch_git_dataset",
    "read_manifest",
    "write_manifest",
]
