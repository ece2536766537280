"""Paths of the files that the soup rules write and read, relative to the workflow's working directory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from imagebench.workflow import RESULTS, checkpoint_path, manifest_path

if TYPE_CHECKING:
    from imagebench.soups.config import SoupSpec


def soup_folder(soup: str) -> Path:
    return RESULTS / "soups" / soup


def split_manifest_path(soup: str, split: str) -> Path:
    if split == "evaluation":
        return manifest_path(f"{soup}.evaluation")
    return soup_folder(soup) / f"{split}.parquet"


def heldout_score_path(soup: str, ingredient: str) -> Path:
    return soup_folder(soup) / "heldout" / f"{ingredient}.parquet"


def soup_figure_path(soup: str, suffix: str) -> Path:
    return RESULTS / "figures" / f"soup-{soup}.{suffix}"


def averaging_inputs(soup: SoupSpec) -> dict[str, str]:
    """Return {ingredient: converted checkpoint}: the files a soup averages.

    Every adapter maps each source tensor to one timm tensor (see imagebench.checkpoints.adapters),
    so averaging converted checkpoints equals converting averaged raw files.
    """
    return {ingredient.name: str(checkpoint_path(ingredient.member)) for ingredient in soup.ingredients}
