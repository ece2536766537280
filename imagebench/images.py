"""Image decoding that records a failure instead of raising it.

Every image ends up as RGB, as the reference ImageNet loaders (timm's
``ImageDataset`` and torchvision's ``ImageFolder``) produce it. Grayscale,
CMYK, palette and RGBA files are converted with Pillow's ``convert("RGB")``,
which drops the alpha channel without compositing. The file's content, not
its extension, decides the decoder, so a PNG, GIF or WebP file named ``.JPEG``
decodes as what it is. EXIF orientation is not applied, because the reference
loaders do not apply it and published accuracies were measured without it: an
image is used as its pixels are stored.

Two cases differ from the reference loaders on purpose:

- 16-bit grayscale files (Pillow mode ``I;16``) keep the high byte of each
  pixel, as Pillow already does for 16-bit RGB files. ``convert("RGB")`` would
  clip every value above 255 to white. ImageNet's JPEG files are 8-bit, so
  their accuracies do not change.
- Files that would exhaust memory are rejected: more than ``MAX_IMAGE_PIXELS``
  pixels, or an aspect ratio above ``MAX_ASPECT_RATIO``, whose resize to the
  evaluation size would allocate gigabytes (a 20,000 x 1 pixel PNG of a few
  hundred bytes becomes 5,120,000 x 256 pixels when its shorter side is
  resized to 256).

A file whose decoding blocks (a FIFO that no process writes to, a file on a
hung network mount) is abandoned after ``DECODE_TIMEOUT_S`` seconds. See
``decode_rgb`` for where that timeout applies. A FIFO or device that opens is
rejected as not a regular file, because Pillow would read it to its end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

# Pillow refuses images above twice this many pixels and warns above it. The
# warning is turned into a failure, so that a file whose header claims
# 40,000 x 40,000 pixels is rejected before its pixel buffer is allocated.
MAX_IMAGE_PIXELS = 89_478_485

# The largest shorter side, in pixels, that an evaluation transform is
# expected to resize images to: input size divided by crop_pct is at most
# 1024 over the pretrained configs of timm 1.0.31. An image whose resize to
# that shorter side would exceed MAX_IMAGE_PIXELS is rejected, which allows
# aspect ratios up to about 85:1.
MAX_RESIZED_SHORTER_SIDE = 1024
MAX_ASPECT_RATIO = MAX_IMAGE_PIXELS / MAX_RESIZED_SHORTER_SIDE**2

# Decoding an ImageNet file takes milliseconds, so a file that takes this long
# is treated as hung.
DECODE_TIMEOUT_S = 30.0

_SIXTEEN_BIT_GRAYSCALE_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


class DecodeTimeoutError(TimeoutError):
    """Decoding one image took longer than its timeout."""


@dataclass(frozen=True)
class DecodeResult:
    image: Image.Image | None
    error: str | None


def decode_rgb(path: str | Path, *, timeout_s: float | None = None) -> DecodeResult:
    """Decode ``path`` to an RGB image, or return the reason it cannot be decoded.

    ``timeout_s`` (default ``DECODE_TIMEOUT_S``, read at call time) bounds the
    time spent on one file, opening included. It is enforced with SIGALRM, so
    it applies only in a process's main thread, which is where DataLoader
    worker processes and a ``workers: 0`` evaluation decode. Signals interrupt
    blocking system calls and Python code but not a single long call into a C
    library. In any other thread the file is decoded without a timeout.
    """
    limit_s = DECODE_TIMEOUT_S if timeout_s is None else timeout_s
    name = Path(path).name
    try:
        with _deadline(limit_s), warnings.catch_warnings(), open(path, "rb") as handle:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            _check_regular_file(handle, name=name)
            with Image.open(handle) as image:
                _check_size(image)
                image.load()
                rgb = _to_rgb(image)
    except UnidentifiedImageError:
        # Pillow names the file object here, and the file name reads better.
        return DecodeResult(image=None, error=f"UnidentifiedImageError: cannot identify image file {name!r}")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # OSError includes DecodeTimeoutError. The folder is dropped from the
        # message so that it does not depend on where the dataset is mounted,
        # and the row already names the file.
        message = str(error).replace(str(path), name)
        return DecodeResult(image=None, error=f"{type(error).__name__}: {message}")
    return DecodeResult(image=rgb, error=None)


def _check_regular_file(handle: BinaryIO, *, name: str) -> None:
    # Pillow reads a file it cannot seek in (a FIFO, a character device such
    # as /dev/zero) into memory to its end, which may never come.
    if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
        raise OSError(f"{name} is not a regular file")


def _check_size(image: Image.Image) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ValueError(f"image has an empty size {width}x{height}")
    if width * height > MAX_IMAGE_PIXELS:
        raise Image.DecompressionBombError(
            f"image claims {width}x{height} pixels, more than the limit of {MAX_IMAGE_PIXELS}"
        )
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"image is {width}x{height} pixels, an aspect ratio above the limit of {MAX_ASPECT_RATIO:.0f}:1. "
            f"Resizing its shorter side to {MAX_RESIZED_SHORTER_SIDE} pixels would need more than "
            f"{MAX_IMAGE_PIXELS} pixels."
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_GRAYSCALE_MODES:
        high_bytes = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
        return Image.fromarray(high_bytes).convert("RGB")
    return image.convert("RGB")


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise ``DecodeTimeoutError`` in the body after ``seconds``, in the main thread only.

    An interval timer that was already running is re-armed afterwards with its
    remaining time, so the deadline does not cancel a caller's own alarm.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise DecodeTimeoutError(f"decoding timed out after {seconds:g} s. Check that the file is readable.")

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        # The alarm may fire just before it is disarmed, so the handler is
        # restored in a finally of its own.
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM, previous_handler)
            if previous_delay > 0:
                remaining = max(previous_delay - (time.monotonic() - started), 1e-3)
                signal.setitimer(signal.ITIMER_REAL, remaining, previous_interval)
