import json
import signal
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from helpers_faults import MalformedImage, fifo_released_after, write_malformed_images
from imagebench import images
from imagebench.images import decode_rgb

# Address space that the memory-limit test's process may add after importing
# torch: room for the evaluation transform, far less than a 40,000 x 40,000 or
# 200,000 x 1 pixel image needs.
EXTRA_MEMORY_BYTES = 2 << 30


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


# Malformed files, made by helpers_faults.write_malformed_images.


@pytest.fixture(scope="module")
def malformed(tmp_path_factory: pytest.TempPathFactory, bad_images_dir: Path) -> tuple[Path, list[MalformedImage]]:
    folder = tmp_path_factory.mktemp("malformed")
    return folder, write_malformed_images(folder, bad_images_dir=bad_images_dir)


def test_malformed_images_decode_or_fail_with_reason(malformed):
    folder, kinds = malformed
    for kind in kinds:
        result = decode_rgb(folder / kind.name)
        if kind.decodes:
            assert result.error is None, kind.name
            assert result.image.mode == "RGB", kind.name
        else:
            assert result.image is None, kind.name
            assert kind.reason in result.error, kind.name


def test_malformed_twins_decode_to_same_pixels(malformed):
    folder, kinds = malformed
    twins = [kind for kind in kinds if kind.twin]
    assert len(twins) >= 4
    for kind in twins:
        pixels = np.asarray(decode_rgb(folder / kind.name).image)
        twin_pixels = np.asarray(decode_rgb(folder / kind.twin).image)
        assert np.array_equal(pixels, twin_pixels), f"{kind.name} differs from {kind.twin}"


def test_exif_orientation_not_applied_like_reference_loaders(malformed):
    from torchvision.datasets.folder import pil_loader

    folder, _ = malformed
    path = folder / "n01491361_exif-rotated.JPEG"
    with Image.open(path) as image:
        assert image.getexif()[0x0112] == 6
        rotated = ImageOps.exif_transpose(image)
        assert rotated.size == image.size[::-1]
        # timm's ImageDataset opens and converts the same way.
        timm_pixels = np.asarray(image.convert("RGB"))

    decoded = np.asarray(decode_rgb(path).image)
    assert np.array_equal(decoded, np.asarray(pil_loader(path)))
    assert np.array_equal(decoded, timm_pixels)


def test_gray16_keeps_high_byte_like_rgb16(tmp_path: Path):
    values = np.random.default_rng(0).integers(0, 65536, size=(31, 17), dtype=np.uint16)
    gray_path = tmp_path / "gray16.png"
    Image.fromarray(values).save(gray_path)
    rgb_path = tmp_path / "rgb16.png"
    rgb_path.write_bytes(_png_rgb16(np.repeat(values[:, :, None], 3, axis=2)))

    gray = np.asarray(decode_rgb(gray_path).image)
    assert np.array_equal(gray[:, :, 0], (values >> 8).astype(np.uint8))
    # Pillow reduces 16-bit RGB files to 8 bits itself, and grayscale must agree with it.
    assert np.array_equal(gray, np.asarray(decode_rgb(rgb_path).image))


def _png_rgb16(pixels: np.ndarray) -> bytes:
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_hostile_images_stay_within_memory_limit(malformed):
    # Decoding and timm's evaluation transform of every file run in a process
    # whose address space is capped. An image that allocates gigabytes fails
    # there with MemoryError instead of exhausting the machine.
    folder, kinds = malformed
    script = f"""
import json, resource, sys
from pathlib import Path
from timm.data import create_transform
from imagebench.images import decode_rgb
# The cap counts from the address space after import, which differs between torch builds.
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
limit = int(status["VmSize"].split()[0]) * 1024 + {EXTRA_MEMORY_BYTES}
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
transform = create_transform(input_size=(3, 224, 224), crop_pct=0.875, interpolation="bicubic", is_training=False)
results = {{}}
for name in sys.argv[1:]:
    decoded = decode_rgb(Path({str(folder)!r}) / name)
    if decoded.error is None:
        results[name] = list(transform(decoded.image).shape)
    else:
        results[name] = decoded.error
print(json.dumps(results))
"""
    names = [kind.name for kind in kinds]
    completed = subprocess.run([sys.executable, "-c", script, *names], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    results = json.loads(completed.stdout)
    for kind in kinds:
        if kind.decodes:
            assert results[kind.name] == [3, 224, 224], kind.name
        else:
            assert kind.reason in results[kind.name], kind.name


def test_aspect_ratio_below_limit_decodes(tmp_path: Path):
    path = tmp_path / "n01440764_panorama.png"
    Image.new("RGB", (8000, 100)).save(path)
    assert decode_rgb(path).error is None


# Decode timeout.


def test_fifo_decode_times_out(tmp_path: Path):
    path = tmp_path / "n01440764_fifo.JPEG"
    with fifo_released_after(path, 60):
        result = decode_rgb(path, timeout_s=0.5)
    assert result.image is None
    assert result.error.startswith("DecodeTimeoutError: decoding timed out after 0.5 s")


def test_decode_timeout_default_read_at_call_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(images, "DECODE_TIMEOUT_S", 0.25)
    path = tmp_path / "n01440764_fifo.JPEG"
    with fifo_released_after(path, 60):
        result = decode_rgb(path)
    assert "timed out after 0.25 s" in result.error


def test_decode_restores_alarm_handler_and_timer(sample_dir: Path):
    def own_handler(signum, frame):
        raise AssertionError("the caller's alarm fired during the test")

    previous = signal.signal(signal.SIGALRM, own_handler)
    signal.setitimer(signal.ITIMER_REAL, 600)
    try:
        result = decode_rgb(sample_dir / "n01491361_tiger_shark.JPEG", timeout_s=5)
        assert result.error is None
        assert signal.getsignal(signal.SIGALRM) is own_handler
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_decode_in_thread_has_no_timeout(tmp_path: Path):
    # SIGALRM reaches only the main thread, so a thread waits in open() until
    # the writer shows up, and only then is the FIFO rejected.
    path = tmp_path / "n01440764_fifo.JPEG"
    results = []
    with fifo_released_after(path, 1.0):
        thread = threading.Thread(target=lambda: results.append(decode_rgb(path, timeout_s=0.1)))
        thread.start()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert results[0].error == "OSError: n01440764_fifo.JPEG is not a regular file"


def test_character_device_rejected_without_reading(tmp_path: Path):
    path = tmp_path / "n01440764_zero.JPEG"
    path.symlink_to("/dev/zero")
    assert decode_rgb(path).error == "OSError: n01440764_zero.JPEG is not a regular file"
