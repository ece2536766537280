"""Shared pieces of the fault-injection tests.

The module provides a reference run of the real workflow on ten sample
images and starts Snakemake in its own process group, so that a test can
SIGKILL the whole tree. It checks that every output at a final path opens and
matches the reference run, and it writes malformed images.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ElementTree
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psutil
import pytest
from PIL import Image

from conftest import SAMPLE
from helpers_checkpoints import LITE0_SHA256, lite0_raw_weights
from workflow_runner import REPO, small_config, write_config

SAMPLE_DIR = SAMPLE
SHARD_0 = "results/predictions/sample/efficientnet_lite0/shard-0-of-2.parquet"
SHARD_1 = "results/predictions/sample/efficientnet_lite0/shard-1-of-2.parquet"

# Folders of a finished run that tests copy to start from a converted
# checkpoint and a built manifest instead of running those jobs again.
_PREPARED_FOLDERS = ("results/.cache", "results/downloads", "results/checkpoints", "results/datasets")

# Outputs whose bytes differ between two runs on purpose or by a known gap:
# job logs carry timestamps, and SVG figures carry a date and random ids.
_NOT_BYTE_COMPARED_SUFFIXES = (".log", ".svg")

# Columns of a measured time, rate or memory peak (the throughput
# measurement and the tables that join it), which differ between any two runs.
_MEASURED_COLUMN = re.compile(
    r"(cpu_|cuda_)?(images_per_second|latency_\w+|iterations|timed_seconds|peak_memory_mb|batch1_p50_ms|load_average_1m)"
)
# Figures drawn from those measurements.
_MEASURED_FIGURES = frozenset({"accuracy_vs_throughput.png"})
# Headers of the Markdown leaderboard's columns that show those measurements.
_MEASURED_MARKDOWN_HEADER = re.compile(r"images/s")

# Results shared by every fault-test module of one session.
_SESSION_CACHE: dict[str, Any] = {}


@dataclass(frozen=True)
class ReferenceRun:
    """An uninterrupted run of the small config: its folder, its config and how long it took."""

    workdir: Path
    config: dict[str, Any]
    seconds: float


def lite0_file_model(factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Return a model entry for the real lite0 weights as a local ``file:`` source, so runs need no pip."""
    raw_path, _ = lite0_raw_weights(factory)
    return {
        "architecture": "tf_efficientnet_lite0",
        "weights": {"file": str(raw_path), "sha256": LITE0_SHA256, "format": "efficientnet_pytorch"},
    }


def sample_subset(factory: pytest.TempPathFactory, count: int = 10) -> Path:
    """Return a folder of ``count`` sample images (links), the same folder for the whole session."""
    key = f"sample-{count}"
    if key not in _SESSION_CACHE:
        if not SAMPLE_DIR.is_dir():
            pytest.skip(f"the ImageNet sample is not at {SAMPLE_DIR}")
        folder = factory.mktemp(key)
        files = sorted(SAMPLE_DIR.iterdir())
        for source in files[:: len(files) // count][:count]:
            (folder / source.name).symlink_to(source.resolve())
        _SESSION_CACHE[key] = folder
    return _SESSION_CACHE[key]


def fault_config(factory: pytest.TempPathFactory, **overrides: Any) -> dict[str, Any]:
    """Return the small config of the fault tests: ten images, two shards, lite0 from a local file."""
    config = small_config(sample_subset(factory), shards=2, models={"efficientnet_lite0": lite0_file_model(factory)})
    config.update(overrides)
    return config


def reference_run(factory: pytest.TempPathFactory) -> ReferenceRun:
    """Return the uninterrupted run of ``fault_config``, run once per session."""
    if "reference" not in _SESSION_CACHE:
        workdir = factory.mktemp("reference")
        config = fault_config(factory)
        write_config(workdir, config)
        started = time.monotonic()
        result = run_snakemake(workdir, "--cores", "2")
        assert result.returncode == 0, result.output
        _SESSION_CACHE["reference"] = ReferenceRun(
            workdir=workdir, config=config, seconds=time.monotonic() - started
        )
    return _SESSION_CACHE["reference"]


def prepared_workdir(
    reference: ReferenceRun, workdir: Path, *, config: dict[str, Any] | None = None, manifest: bool = True
) -> Path:
    """Copy the reference's checkpoint and, with ``manifest``, its manifest into ``workdir``, keeping their mtimes.

    Snakemake then plans only the evaluation and what follows it. ``config``
    replaces the reference's config, for a run on other images.
    """
    write_config(workdir, config or reference.config)
    for folder in _PREPARED_FOLDERS:
        if manifest or folder != "results/datasets":
            shutil.copytree(reference.workdir / folder, workdir / folder)
    return workdir


# Snakemake in its own process group.


@dataclass(frozen=True)
class SnakemakeResult:
    returncode: int
    output: str


def snakemake_command(workdir: Path, *arguments: str) -> list[str]:
    return [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        *arguments,
    ]  # fmt: skip


def start_snakemake(workdir: Path, *arguments: str) -> tuple[subprocess.Popen, Path]:
    """Start Snakemake as the leader of a new session (and so of a new process group).

    Its output goes to a file beside the results rather than to a pipe, which
    would block the run once full. Returns the process and that file.
    """
    log = workdir / f"snakemake-{time.monotonic_ns()}.out"
    with open(log, "wb") as stream:
        process = subprocess.Popen(
            snakemake_command(workdir, *arguments),
            cwd=workdir,
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, log


def run_snakemake(workdir: Path, *arguments: str, timeout_s: float = 600) -> SnakemakeResult:
    """Run Snakemake to the end and return its exit status and output."""
    process, log = start_snakemake(workdir, *arguments)
    try:
        returncode = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_process_group(process)
        raise
    return SnakemakeResult(returncode=returncode, output=log.read_text(errors="replace"))


def kill_process_group(process: subprocess.Popen) -> list[psutil.Process]:
    """SIGKILL every process of ``process``'s group and return those still alive afterwards.

    The survivors are taken from a scan made before the kill, because a killed
    job's children are reparented and can no longer be found from the leader.
    """
    group = [candidate for candidate in psutil.process_iter() if _group_of(candidate) == process.pid]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    _, alive = psutil.wait_procs(group, timeout=10)
    return [survivor for survivor in alive if survivor.status() != psutil.STATUS_ZOMBIE]


def _group_of(candidate: psutil.Process) -> int | None:
    try:
        return os.getpgid(candidate.pid)
    except (ProcessLookupError, PermissionError):
        return None


def job_processes(leader: subprocess.Popen, script: str) -> list[psutil.Process]:
    """Return the Python processes below ``leader`` that run the job script ``script`` (e.g. evaluate_shard)."""
    found = []
    try:
        descendants = psutil.Process(leader.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    for candidate in descendants:
        try:
            command = candidate.cmdline()
        except psutil.Error:
            continue
        if command and "python" in Path(command[0]).name and any(part.endswith(f".{script}.py") for part in command):
            found.append(candidate)
    return found


def wait_until(condition: Callable[[], Any], *, timeout_s: float, interval_s: float = 0.005) -> Any:
    """Poll ``condition`` until it returns a true value, and return that value (None on timeout)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    return None


def incomplete_marker(workdir: Path, output: str) -> Path:
    """Return the file in which Snakemake marks ``output`` as written by a job that has not finished."""
    import base64

    return workdir / ".snakemake" / "incomplete" / base64.urlsafe_b64encode(output.encode()).decode()


# Checks of a results folder.


def final_files(workdir: Path) -> list[Path]:
    """Return the files at final paths under results/, relative to ``workdir``: no logs, no hidden files."""
    results = workdir / "results"
    found = []
    for path in sorted(results.rglob("*")):
        relative = path.relative_to(workdir)
        if not path.is_file() or relative.parts[1] == "logs":
            continue
        if any(part.startswith(".") for part in relative.parts[1:]) and relative.parts[1] != ".cache":
            continue
        found.append(relative)
    return found


def unreadable_outputs(workdir: Path) -> list[str]:
    """Open every final file with the reader of its format and return the ones that fail, with the reason."""
    problems = []
    for relative in final_files(workdir):
        try:
            _open_output(workdir / relative)
        except Exception as error:  # noqa: BLE001 (any failure to open is what this check reports)
            problems.append(f"{relative}: {type(error).__name__}: {error}")
    return problems


def _open_output(path: Path) -> None:
    suffix = path.suffix
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.read_table(path)
    elif suffix == ".json":
        json.loads(path.read_text())
    elif suffix == ".safetensors":
        from safetensors.torch import load_file

        load_file(path)
    elif suffix == ".weights":
        import torch

        torch.load(path, map_location="cpu", weights_only=True)
    elif suffix == ".png":
        with Image.open(path) as image:
            image.load()
    elif suffix == ".svg":
        ElementTree.parse(path)
    elif suffix == ".csv":
        pl.read_csv(path)
    elif path.stat().st_size == 0:
        raise ValueError("empty file")


def outputs_differing_from(workdir: Path, reference: Path) -> list[str]:
    """Return the final files of ``workdir`` that differ from the same path in ``reference``.

    Files are compared by bytes. A table whose bytes differ counts as the same
    when only measured columns (``_MEASURED_COLUMN``) differ.
    """
    differing = []
    for relative in final_files(workdir):
        if relative.suffix in _NOT_BYTE_COMPARED_SUFFIXES or relative.name in _MEASURED_FIGURES:
            continue
        other = reference / relative
        if not other.is_file():
            differing.append(f"{relative}: not in the reference run")
        elif (workdir / relative).read_bytes() != other.read_bytes():
            columns = _differing_columns(workdir / relative, other)
            if columns is None or columns:
                differing.append(f"{relative}: bytes differ" + (f" in columns {columns}" if columns else ""))
    return differing


def markdown_without_measured(text: str) -> str:
    """Return a Markdown leaderboard without its measured columns (images/s), which differ between runs."""
    lines = text.splitlines()
    header = next((line for line in lines if line.startswith("|")), None)
    if header is None:
        return text
    cells = header.split("|")
    measured = {index for index, cell in enumerate(cells) if _MEASURED_MARKDOWN_HEADER.search(cell)}
    unmeasured_lines = [
        "|".join(cell for index, cell in enumerate(line.split("|")) if index not in measured)
        if line.startswith("|") else line
        for line in lines
    ]
    return "\n".join(unmeasured_lines)


def _differing_columns(path: Path, reference: Path) -> list[str] | None:
    """Return the unmeasured columns whose values differ, or None when the files are not comparable tables."""
    if path.suffix == ".md":
        same = markdown_without_measured(path.read_text()) == markdown_without_measured(reference.read_text())
        return [] if same else None
    readers = {".parquet": pl.read_parquet, ".csv": pl.read_csv}
    read = readers.get(path.suffix)
    if read is None:
        return None
    frame, reference_frame = read(path), read(reference)
    if frame.columns != reference_frame.columns or frame.height != reference_frame.height:
        return None
    return [
        column
        for column in frame.columns
        if not _MEASURED_COLUMN.fullmatch(column) and not frame[column].equals(reference_frame[column])
    ]


def read_predictions(workdir: Path) -> pl.DataFrame:
    """Return every prediction row of a run, sorted, for a content comparison."""
    files = sorted((workdir / "results" / "predictions").rglob("shard-*.parquet"))
    return pl.concat([pl.read_parquet(path) for path in files]).sort("model", "image_id")


def read_leaderboard_numbers(workdir: Path) -> pl.DataFrame:
    columns = [
        "dataset", "model", "images", "failed_images",
        "top1", "top1_low", "top1_high", "top5", "top5_low", "top5_high",
    ]  # fmt: skip
    return pl.read_parquet(workdir / "results" / "leaderboard.parquet").select(columns)


# Malformed images.


@dataclass(frozen=True)
class MalformedImage:
    """A file made to stress the decoder, and what decoding it must give.

    ``twin`` names a file of the same set whose decoded pixels must be equal,
    so that both get the same predictions.
    """

    name: str
    decodes: bool
    reason: str = ""
    twin: str | None = None


TIGER_SHARK = "n01491361_tiger_shark.JPEG"


def write_malformed_images(folder: Path, *, bad_images_dir: Path) -> list[MalformedImage]:
    """Write every kind of malformed image into ``folder`` and return what each must decode to.

    All are made from the sample's tiger shark (synset n01491361), which is
    linked in as well, so that every file has a valid synset name.
    """
    folder.mkdir(parents=True, exist_ok=True)
    source = SAMPLE_DIR / TIGER_SHARK
    (folder / TIGER_SHARK).symlink_to(source.resolve())
    rgb = Image.open(source).convert("RGB")
    jpeg = source.read_bytes()
    synset = "n01491361"

    kinds = [MalformedImage(TIGER_SHARK, decodes=True)]
    for bad in sorted(bad_images_dir.iterdir()):
        shutil.copy(bad, folder / bad.name)
    kinds += [
        MalformedImage(f"{synset}_cmyk.JPEG", decodes=True),
        MalformedImage(f"{synset}_png-named-jpeg.JPEG", decodes=True),
        MalformedImage(f"{synset}_truncated.JPEG", decodes=False, reason="truncated"),
        MalformedImage(f"{synset}_empty.JPEG", decodes=False, reason="cannot identify image file"),
        MalformedImage(f"{synset}_not-an-image.JPEG", decodes=False, reason="cannot identify image file"),
    ]

    rgb.save(folder / f"{synset}_lossless.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    rgba.save(folder / f"{synset}_rgba.png")
    gray = rgb.convert("L")
    gray.save(folder / f"{synset}_gray8.png")
    Image.fromarray(np.asarray(gray).astype(np.uint16) * 257).save(folder / f"{synset}_gray16.png")
    rgb.save(folder / f"{synset}_gif-named.JPEG", format="GIF")
    rgb.save(folder / f"{synset}_webp-named.JPEG", format="WEBP", lossless=True)
    (folder / f"{synset}_exif-rotated.JPEG").write_bytes(with_exif_orientation(jpeg, orientation=6))
    rgb.save(folder / f"{synset}_progressive.JPEG", format="JPEG", quality=90, progressive=True)
    (folder / f"{synset}_trailing-garbage.JPEG").write_bytes(jpeg + b"\x00garbage after the end marker" * 100)
    Image.new("RGB", (1, 1), (200, 120, 40)).save(folder / f"{synset}_one-pixel.JPEG", format="JPEG")
    kinds += [
        MalformedImage(f"{synset}_lossless.png", decodes=True),
        MalformedImage(f"{synset}_rgba.png", decodes=True, twin=f"{synset}_lossless.png"),
        MalformedImage(f"{synset}_gray8.png", decodes=True),
        MalformedImage(f"{synset}_gray16.png", decodes=True, twin=f"{synset}_gray8.png"),
        MalformedImage(f"{synset}_gif-named.JPEG", decodes=True),
        MalformedImage(f"{synset}_webp-named.JPEG", decodes=True, twin=f"{synset}_lossless.png"),
        MalformedImage(f"{synset}_exif-rotated.JPEG", decodes=True, twin=TIGER_SHARK),
        MalformedImage(f"{synset}_progressive.JPEG", decodes=True),
        MalformedImage(f"{synset}_trailing-garbage.JPEG", decodes=True, twin=TIGER_SHARK),
        MalformedImage(f"{synset}_one-pixel.JPEG", decodes=True),
    ]

    (folder / f"{synset}_huge-header-png.png").write_bytes(png_with_size(width=40_000, height=40_000))
    (folder / f"{synset}_huge-header-jpeg.JPEG").write_bytes(jpeg_with_size(jpeg, width=40_000, height=40_000))
    # A valid file of a few hundred bytes, whose resize to a 256-pixel shorter side needs 39 GB.
    Image.new("RGB", (200_000, 1), (120, 50, 30)).save(folder / f"{synset}_wide.png")
    (folder / f"{synset}_corrupt-zlib.png").write_bytes(png_with_corrupt_data(rgb))
    kinds += [
        MalformedImage(f"{synset}_huge-header-png.png", decodes=False, reason="DecompressionBomb"),
        MalformedImage(f"{synset}_huge-header-jpeg.JPEG", decodes=False, reason="DecompressionBomb"),
        MalformedImage(f"{synset}_wide.png", decodes=False, reason="aspect ratio"),
        MalformedImage(f"{synset}_corrupt-zlib.png", decodes=False, reason="broken data stream"),
    ]
    return kinds


def with_exif_orientation(jpeg: bytes, *, orientation: int) -> bytes:
    """Insert an EXIF segment with ``orientation`` after the JPEG start marker, leaving the pixel data as is."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = b"Exif\x00\x00" + exif.tobytes()
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + segment + jpeg[2:]


def png_with_size(*, width: int, height: int) -> bytes:
    """Return a one-pixel-data PNG whose header claims ``width`` x ``height`` grayscale pixels."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def jpeg_with_size(jpeg: bytes, *, width: int, height: int) -> bytes:
    """Return ``jpeg`` with the height and width of its baseline frame header (SOF0) replaced."""
    data = bytearray(jpeg)
    start = data.find(b"\xff\xc0")
    if start < 0:
        raise ValueError("the JPEG has no baseline frame header (SOF0)")
    data[start + 5 : start + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_with_corrupt_data(image: Image.Image) -> bytes:
    """Return ``image`` as a PNG with one byte of its compressed pixel data flipped."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    idat = data.find(b"IDAT")
    data[idat + 104] ^= 0xFF
    return bytes(data)


@contextmanager
def fifo_released_after(path: Path, seconds: float) -> Iterator[None]:
    """Make a FIFO at ``path`` and, after ``seconds``, open and close its write end once.

    Opening a FIFO for reading blocks until a writer appears, which simulates
    a file on a hung mount. The late writer releases a reader that no
    timeout stopped, so a broken timeout fails the test instead of hanging it.
    """
    os.mkfifo(path)
    stop = threading.Event()

    def release() -> None:
        while not stop.wait(seconds):
            try:
                descriptor = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                continue  # no reader is waiting yet
            os.close(descriptor)

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=seconds + 5)


@contextmanager
def mounted_tmpfs(path: Path, *, size_bytes: int, read_only: bool = False) -> Iterator[None]:
    """Mount a tmpfs of ``size_bytes`` at ``path``, or skip the test where mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size_bytes},mode=0755" + (",ro" if read_only else "")
    command = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]
    mounted = subprocess.run(command, capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {path} (needs root): {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)
