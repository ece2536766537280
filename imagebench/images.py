"""Image decoding that records a failure instead of raising it.

Every image ends up as RGB, as the reference ImageNet loaders (timm's
``ImageDataset`` and torchvision's ``ImageFolder``) produce it: grayscale,
CMYK, palette and RGBA files are converted with Pillow's ``convert("RGB")``,
and the file's content, not its extension, decides the decoder. EXIF
orientation is not applied, because the reference loaders do not apply it and
published accuracies were measured without it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

# Pillow refuses images above twice this many pixels and warns above it. The
# warning is turned into a failure, so that a file whose header claims
# 40,000 x 40,000 pixels is rejected before its pixel buffer is allocated.
MAX_IMAGE_PIXELS = 89_478_485


@dataclass(frozen=True)
class DecodeResult:
    image: Image.Image | None
    error: str | None


def decode_rgb(path: str | Path) -> DecodeResult:
    """Decode ``path`` to an RGB image, or return the reason it cannot be decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_size(image)
                image.load()
                rgb = image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # The folder is dropped from the message so that it does not depend on
        # where the dataset is mounted; the row already names the file.
        message = str(error).replace(str(path), Path(path).name)
        return DecodeResult(image=None, error=f"{type(error).__name__}: {message}")
    return DecodeResult(image=rgb, error=None)


def _check_size(image: Image.Image) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ValueError(f"image has an empty size {width}x{height}")
    if width * height > MAX_IMAGE_PIXELS:
        raise Image.DecompressionBombError(
            f"image claims {width}x{height} pixels, more than the limit of {MAX_IMAGE_PIXELS}"
        )
