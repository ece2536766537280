import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagebench.images import decode_rgb


def test_sample_images_decode_to_rgb(sample_dir: Path):
    grayscale = 0
    for path in sorted(sample_dir.iterdir()):
        with Image.open(path) as original:
            grayscale += original.mode == "L"
        result = decode_rgb(path)
        assert result.error is None, path
        assert result.image.mode == "RGB"
    assert grayscale == 13


@pytest.mark.parametrize(
    ("name", "expected_error"),
    [
        ("n01491361_truncated.JPEG", "truncated"),
        ("n01491361_empty.JPEG", "cannot identify image file"),
        ("n01491361_not-an-image.JPEG", "cannot identify image file"),
    ],
)
def test_bad_images_fail_with_reason(bad_images_dir: Path, name: str, expected_error: str):
    result = decode_rgb(bad_images_dir / name)
    assert result.image is None
    assert expected_error in result.error
    assert str(bad_images_dir) not in result.error


@pytest.mark.parametrize("name", ["n01491361_cmyk.JPEG", "n01491361_png-named-jpeg.JPEG"])
def test_recoverable_bad_images_decode(bad_images_dir: Path, name: str):
    result = decode_rgb(bad_images_dir / name)
    assert result.error is None
    assert result.image.mode == "RGB"


def test_cmyk_decodes_like_its_rgb_twin(bad_images_dir: Path, sample_dir: Path):
    # The CMYK and PNG files are re-encodings of the tiger shark image of the sample.
    reference = np.asarray(decode_rgb(sample_dir / "n01491361_tiger_shark.JPEG").image, dtype=np.float32)
    cmyk = np.asarray(decode_rgb(bad_images_dir / "n01491361_cmyk.JPEG").image, dtype=np.float32)
    png = np.asarray(decode_rgb(bad_images_dir / "n01491361_png-named-jpeg.JPEG").image, dtype=np.float32)
    assert cmyk.shape == reference.shape
    assert np.abs(cmyk - reference).mean() < 12
    assert np.abs(png - reference).mean() < 12


def test_huge_header_rejected_before_allocation(tmp_path: Path):
    path = tmp_path / "n01440764_huge.png"
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    # Patch the IHDR width and height to 40,000 x 40,000.
    data[16:24] = (40_000).to_bytes(4, "big") + (40_000).to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    result = decode_rgb(path)
    assert result.image is None
    assert "40000x40000" in result.error or "DecompressionBomb" in result.error
