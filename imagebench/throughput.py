"""Model-only throughput: images per second, batch latency and peak memory per (model, setting).

A setting is one way to run a model: device, batch size, AMP dtype, channels_last,
torch.compile, input size and thread count. Before a setting is timed, a pre-flight
check runs the same real images through the model in float32 and in the setting. A
setting whose top-1 agrees with float32 on fewer than ``min_agreement`` of the images,
or whose logits contain NaN or inf, is recorded as invalid and not timed, so that a
fast but wrong setting never reaches the leaderboard.

Timing excludes decoding, preprocessing and host-to-device copies: the batch is built
once on the device, warm-up iterations run untimed, and every timed iteration ends with
a device synchronization.

Snakemake imports this module while it parses the workflow, to list the settings, so
torch, timm and polars are imported inside the functions that need them.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagebench.config import settings_from_section
from imagebench.errors import ConfigError
from imagebench.steps import job

if TYPE_CHECKING:
    import polars as pl
    import torch

_LOGGER = logging.getLogger(__name__)

RESULTS = Path("results")

# Settings measured when the config's throughput section lists none. CUDA settings
# run only where a GPU is visible or the config's `devices` names cuda.
DEFAULT_SETTINGS: dict[str, dict[str, Any]] = {
    "cpu-fp32-b1": {"device": "cpu", "batch_size": 1},
    "cpu-fp32-b32": {"device": "cpu", "batch_size": 32},
    **{
        f"cuda-{label}-b{batch_size}": {"device": "cuda", "batch_size": batch_size, "amp_dtype": amp_dtype}
        for label, amp_dtype in (("fp32", None), ("bf16", "bfloat16"), ("fp16", "float16"))
        for batch_size in (1, 32, 256)
    },
}

DEVICE_TYPES = ("cpu", "cuda")

# Batch size of the float32 reference pass of the pre-flight check. The batch size changes
# the logits only by float32 rounding, so a large one keeps the check fast.
REFERENCE_BATCH_SIZE = 64


@dataclass(frozen=True)
class ThroughputSetting:
    """One way to run a model; every field ends up as a column of the measurement."""

    name: str
    device: str = "cpu"
    batch_size: int = 1
    amp_dtype: str | None = None
    channels_last: bool = False
    compile: bool = False
    threads: int = 2
    # None: the model's pretrained test resolution (with the model's preprocessing overrides).
    img_size: int | None = None

    @classmethod
    def from_config(cls, name: str, section: dict[str, Any]) -> ThroughputSetting:
        allowed = {item.name for item in fields(cls)} - {"name"}
        unknown = sorted(set(section) - allowed)
        if unknown:
            raise ConfigError(
                f"throughput.settings.{name}: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"allowed keys are {', '.join(sorted(allowed))}"
            )
        setting = cls(name=name, **section)
        setting.check()
        return setting

    def check(self) -> None:
        """Raise ConfigError for a value that the JSON schema would also reject."""
        prefix = f"throughput.settings.{self.name}"
        if not (self.device == "cpu" or self.device == "cuda" or _is_cuda_index(self.device)):
            raise ConfigError(f"{prefix}.device: {self.device!r} is not allowed; use cpu, cuda or cuda:N")
        if self.amp_dtype not in (None, "bfloat16", "float16"):
            raise ConfigError(f"{prefix}.amp_dtype: {self.amp_dtype!r} is not allowed; use bfloat16, float16 or null")
        for key in ("batch_size", "threads"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{prefix}.{key}: {getattr(self, key)!r} is out of range; use an integer >= 1")

    @property
    def device_type(self) -> str:
        return self.device.split(":", 1)[0]

    @property
    def dtype(self) -> str:
        """The dtype that autocast computes in, float32 without AMP."""
        return self.amp_dtype or "float32"


@dataclass(frozen=True)
class TimingOptions:
    """How long to time each setting and how strict the pre-flight check is."""

    warmup_iterations: int = 10
    min_iterations: int = 20
    min_seconds: float = 3.0
    # Timing stops here even below min_iterations, so that one slow setting cannot stall a
    # run. The row's `iterations` column shows how many batches the percentiles rest on.
    max_seconds: float = 120.0
    check_images: int = 256
    min_agreement: float = 0.99
    seed: int = 0

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> TimingOptions:
        options = settings_from_section(cls, section)
        if options.min_iterations < 1 or options.check_images < 1 or options.warmup_iterations < 0:
            raise ConfigError(
                "throughput: min_iterations and check_images must be >= 1 and warmup_iterations >= 0; "
                f"got {options.min_iterations}, {options.check_images} and {options.warmup_iterations}"
            )
        if not 0.0 <= options.min_agreement <= 1.0:
            raise ConfigError(f"throughput.min_agreement: {options.min_agreement!r} is out of range; use 0 to 1")
        return options


@dataclass(frozen=True)
class CheckImages:
    """The images that feed the pre-flight check and the timed batch, with where they came from."""

    tensors: torch.Tensor
    source: str


@dataclass(frozen=True)
class PreflightResult:
    agreement: float
    non_finite: int
    reason: str | None

    @property
    def valid(self) -> bool:
        return self.reason is None


@dataclass
class TimingResult:
    latencies_s: list[float] = field(default_factory=list)
    total_s: float = 0.0
    warmup_iterations: int = 0


# -- config: cheap, called while Snakemake parses the workflow -------------------------------------


def throughput_section(config: dict[str, Any]) -> dict[str, Any]:
    return config.get("throughput") or {}


def throughput_settings(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return {name: setting with every field filled} for the settings that this run measures.

    The config's ``throughput.settings`` replace the defaults. ``throughput.devices``
    ('auto' or a list of device types) decides which device types run; 'auto' runs CUDA
    settings only where this machine has an NVIDIA driver with a GPU.
    """
    section = throughput_section(config)
    configured = section.get("settings") or DEFAULT_SETTINGS
    device_types = _device_types(section.get("devices", "auto"))

    settings = {}
    for name, entry in configured.items():
        setting = ThroughputSetting.from_config(name, dict(entry or {}))
        if setting.device_type in device_types:
            settings[name] = {key: value for key, value in asdict(setting).items() if key != "name"}
    return settings


def timing_options(config: dict[str, Any]) -> dict[str, Any]:
    """Return the timing options of the config with the defaults filled in, as a plain dict."""
    return asdict(TimingOptions.from_config(throughput_section(config)))


def throughput_dataset(config: dict[str, Any]) -> str | None:
    """Return the dataset whose images feed the pre-flight check, or None for random inputs.

    The default is the config's first dataset. ``throughput.dataset: null`` selects
    seeded random inputs, with which the check only catches NaN and inf.
    """
    datasets = list(config["datasets"])
    dataset = throughput_section(config).get("dataset", datasets[0])
    if dataset is not None and dataset not in datasets:
        raise ConfigError(
            f"throughput.dataset: {dataset!r} is not a dataset of this config; "
            f"use one of {', '.join(datasets)} or null for random inputs"
        )
    return dataset


def throughput_inputs(config: dict[str, Any], model: str) -> dict[str, str]:
    """Return the input files of a measurement job: the model's checkpoint, and the manifest of the check images."""
    from imagebench import workflow

    inputs = {"checkpoint": str(workflow.checkpoint_path(model))}
    dataset = throughput_dataset(config)
    if dataset is not None:
        inputs["manifest"] = str(workflow.manifest_path(dataset))
    return inputs


def throughput_dataset_root(config: dict[str, Any]) -> str | None:
    """Return the folder of the check images' dataset, or None for random inputs."""
    from imagebench import workflow

    dataset = throughput_dataset(config)
    return workflow.dataset_root(config, dataset) if dataset is not None else None


def throughput_path(model: str, setting: str) -> Path:
    return RESULTS / "throughput" / model / f"{setting}.parquet"


def throughput_paths(config: dict[str, Any]) -> list[Path]:
    return [
        throughput_path(model, setting) for model in config["models"] for setting in throughput_settings(config)
    ]


def setting_gpus(setting: dict[str, Any]) -> int:
    """Return 1 for a setting on a CUDA device, for the ``gpu`` resource of its job."""
    return int(str(setting["device"]).startswith("cuda"))


def _device_types(value: str | Sequence[str]) -> tuple[str, ...]:
    if value == "auto":
        return ("cpu", "cuda") if _nvidia_gpu_visible() else ("cpu",)
    if isinstance(value, str) or not set(value) <= set(DEVICE_TYPES):
        raise ConfigError(f"throughput.devices: {value!r} is not allowed; use auto or a list of {', '.join(DEVICE_TYPES)}")
    return tuple(value)


def _nvidia_gpu_visible() -> bool:
    # The same test as imagebench.workflow.evaluation_gpus: no torch import while the DAG is built.
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def _is_cuda_index(device: str) -> bool:
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


# -- measurement ----------------------------------------------------------------------------------


def measure_throughput(
    *,
    model: torch.nn.Module,
    model_name: str,
    architecture: str,
    setting: ThroughputSetting,
    options: TimingOptions,
    images: CheckImages,
    checkpoint_sha256: str | None = None,
) -> pl.DataFrame:
    """Check ``setting`` against float32 on ``images``, time it if it agrees, and return one row.

    ``model`` is changed in place (moved to the device, channels_last) and must not be
    reused for another setting. An invalid setting gets ``valid=False``, its reason and
    null timing columns.
    """
    import torch

    from imagebench.runtime import resolve_amp_dtype, select_device

    torch.set_num_threads(setting.threads)
    device = select_device(setting.device)
    amp_dtype = resolve_amp_dtype(setting.amp_dtype)
    if device.type == "cuda":
        # As timm's validate.py and benchmark.py do: let cuDNN pick the fastest kernels.
        # NOTE: the CUDA paths here and in _time_setting and _peak_memory_mb have not run on a GPU yet.
        torch.backends.cudnn.benchmark = True
    param_count = sum(parameter.numel() for parameter in model.parameters())
    inputs = images.tensors.to(device)

    # Pre-flight: the float32 reference runs on the model as given (contiguous, not
    # compiled), before prepare_model converts it in place.
    model = model.eval().to(device)
    reference = predict(model, inputs, batch_size=REFERENCE_BATCH_SIZE, amp_dtype=None, channels_last=False)
    candidate = prepare_model(model, setting=setting)
    logits = predict(
        candidate, inputs, batch_size=setting.batch_size, amp_dtype=amp_dtype, channels_last=setting.channels_last
    )
    preflight = compare_top1(reference, logits, min_agreement=options.min_agreement, dtype=setting.dtype)
    _LOGGER.info(
        "%s / %s: top-1 agrees with float32 on %.2f%% of %d images (%s), %d non-finite logits",
        model_name, setting.name, 100 * preflight.agreement, len(inputs), images.source, preflight.non_finite,
    )

    timing = None
    peak_memory: tuple[float | None, str | None] = (None, None)
    if preflight.valid:
        timing, peak_memory = _time_setting(
            candidate, inputs, setting=setting, options=options, amp_dtype=amp_dtype, device=device
        )
        _LOGGER.info(
            "%s / %s: %.1f images/s over %d batches of %d", model_name, setting.name,
            setting.batch_size * len(timing.latencies_s) / timing.total_s, len(timing.latencies_s), setting.batch_size,
        )
    else:
        _LOGGER.warning("%s / %s is invalid and was not timed: %s", model_name, setting.name, preflight.reason)

    return _measurement_row(
        model_name=model_name, architecture=architecture, setting=setting, device=device, images=images,
        preflight=preflight, timing=timing, peak_memory=peak_memory, param_count=param_count,
        checkpoint_sha256=checkpoint_sha256,
    )


def compare_top1(
    reference: torch.Tensor, logits: torch.Tensor, *, min_agreement: float, dtype: str
) -> PreflightResult:
    """Judge a setting's ``logits`` against the float32 ``reference`` logits of the same images.

    A setting is invalid when any logit is NaN or inf, or when its top-1 class equals
    the reference's on fewer than ``min_agreement`` of the images.
    """
    import torch

    non_finite = int((~torch.isfinite(logits)).sum())
    agreement = float((logits.argmax(dim=1) == reference.argmax(dim=1)).float().mean())
    reason = None
    if non_finite:
        reason = f"{non_finite} NaN or inf logits in {dtype}"
    elif agreement < min_agreement:
        reason = (
            f"top-1 agrees with float32 on {agreement:.2%} of {len(logits)} images, "
            f"below min_agreement {min_agreement:.2%}"
        )
    return PreflightResult(agreement=agreement, non_finite=non_finite, reason=reason)


def prepare_model(model: torch.nn.Module, *, setting: ThroughputSetting) -> torch.nn.Module:
    """Apply the setting's memory format (in place) and torch.compile (a wrapper) to ``model``."""
    import torch

    if setting.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if setting.compile:
        model = torch.compile(model)
    return model


def predict(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
) -> torch.Tensor:
    """Return the float32 logits of ``images`` on the CPU, computed in batches of ``batch_size``."""
    import torch

    logits = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits.append(model(batch).float().cpu())
    return torch.cat(logits)


def time_forward(
    forward: Callable[[], object],
    *,
    synchronize: Callable[[], None],
    options: TimingOptions,
    after_warmup: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> TimingResult:
    """Call ``forward`` untimed ``options.warmup_iterations`` times, then time one call per iteration.

    ``after_warmup`` runs once between the two phases (to reset peak memory). Each timed
    iteration ends with ``synchronize()``, so that an asynchronous device has finished
    the batch before the clock is read. Timing stops once both ``min_iterations`` and
    ``min_seconds`` are reached, or at ``max_seconds``.
    """
    for _ in range(options.warmup_iterations):
        forward()
    synchronize()
    if after_warmup is not None:
        after_warmup()

    result = TimingResult(warmup_iterations=options.warmup_iterations)
    start = clock()
    while True:
        iteration_start = clock()
        forward()
        synchronize()
        end = clock()
        result.latencies_s.append(end - iteration_start)
        result.total_s = end - start

        if len(result.latencies_s) >= options.min_iterations and result.total_s >= options.min_seconds:
            return result
        if result.total_s >= options.max_seconds:
            _LOGGER.warning(
                "timing stopped at max_seconds=%s after %d of min_iterations=%d iterations",
                options.max_seconds, len(result.latencies_s), options.min_iterations,
            )
            return result


def _time_setting(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    setting: ThroughputSetting,
    options: TimingOptions,
    amp_dtype: torch.dtype | None,
    device: torch.device,
) -> tuple[TimingResult, tuple[float | None, str]]:
    import torch

    # The timed batch repeats the check images up to the batch size, so that the input
    # is real (or seeded random) data, never zeros.
    batch = images[torch.arange(setting.batch_size) % len(images)].contiguous()
    if setting.channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)

    def forward() -> object:
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            return model(batch)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    timing = time_forward(
        forward, synchronize=synchronize, options=options, after_warmup=lambda: _reset_peak_memory(device)
    )
    return timing, _peak_memory_mb(device)


# -- peak memory ------------------------------------------------------------------------------------


def _reset_peak_memory(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        # Since Linux 4.0, writing 5 here resets the process's peak resident set size (VmHWM).
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as error:
        _LOGGER.info("cannot reset the peak RSS (%s); peak memory covers the whole process", error)


def _peak_memory_mb(device: torch.device) -> tuple[float | None, str]:
    """Return the peak memory in MiB and what it measures."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_memory_allocated"
    high_water_mark = _vm_hwm_kib()
    if high_water_mark is not None:
        return high_water_mark / 1024, "peak_rss_timed"
    # ru_maxrss is in KiB on Linux and bytes on macOS.
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 2**20 if sys.platform == "darwin" else 2**10
    return maxrss / scale, "peak_rss_process"


def _vm_hwm_kib() -> int | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


# -- rows -------------------------------------------------------------------------------------------


def measurement_schema() -> dict[str, Any]:
    """Return the fixed schema of a measurement file: one row per (model, setting)."""
    import polars as pl

    return {
        "model": pl.String,
        "architecture": pl.String,
        "setting": pl.String,
        "valid": pl.Boolean,
        "invalid_reason": pl.String,
        "top1_agreement": pl.Float64,
        "non_finite_logits": pl.Int64,
        "check_images": pl.Int64,
        "check_inputs": pl.String,
        "images_per_second": pl.Float64,
        "latency_p50_ms": pl.Float64,
        "latency_p90_ms": pl.Float64,
        "latency_p99_ms": pl.Float64,
        "latency_mean_ms": pl.Float64,
        "iterations": pl.Int64,
        "warmup_iterations": pl.Int64,
        "timed_seconds": pl.Float64,
        "peak_memory_mb": pl.Float64,
        "peak_memory_kind": pl.String,
        "device": pl.String,
        "device_type": pl.String,
        "device_name": pl.String,
        "batch_size": pl.Int64,
        "dtype": pl.String,
        "amp": pl.Boolean,
        "channels_last": pl.Boolean,
        "compile": pl.Boolean,
        "input_size": pl.List(pl.Int64),
        "img_size": pl.Int64,
        "threads": pl.Int64,
        "param_count": pl.Int64,
        "checkpoint_sha256": pl.String,
        "torch": pl.String,
        "timm": pl.String,
        "host": pl.String,
        "slurm_job_id": pl.String,
        "load_average_1m": pl.Float64,
    }


def _measurement_row(
    *,
    model_name: str,
    architecture: str,
    setting: ThroughputSetting,
    device: torch.device,
    images: CheckImages,
    preflight: PreflightResult,
    timing: TimingResult | None,
    peak_memory: tuple[float | None, str | None],
    param_count: int,
    checkpoint_sha256: str | None,
) -> pl.DataFrame:
    import polars as pl
    import torch

    from imagebench.runtime import library_versions, run_record

    run = run_record(device)
    input_size = [int(value) for value in images.tensors.shape[1:]]
    row = {
        "model": model_name,
        "architecture": architecture,
        "setting": setting.name,
        "valid": preflight.valid,
        "invalid_reason": preflight.reason,
        "top1_agreement": preflight.agreement,
        "non_finite_logits": preflight.non_finite,
        "check_images": len(images.tensors),
        "check_inputs": images.source,
        **_timing_columns(timing, batch_size=setting.batch_size),
        "peak_memory_mb": peak_memory[0],
        "peak_memory_kind": peak_memory[1],
        "device": str(device),
        "device_type": device.type,
        "device_name": run["device_name"],
        "batch_size": setting.batch_size,
        "dtype": setting.dtype,
        "amp": setting.amp_dtype is not None,
        "channels_last": setting.channels_last,
        "compile": setting.compile,
        "input_size": input_size,
        "img_size": input_size[-1],
        "threads": torch.get_num_threads(),
        "param_count": param_count,
        "checkpoint_sha256": checkpoint_sha256,
        **library_versions(),
        "host": run["host"],
        "slurm_job_id": run["slurm_job_id"],
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    return pl.DataFrame([row], schema=measurement_schema())


def _timing_columns(timing: TimingResult | None, *, batch_size: int) -> dict[str, Any]:
    if timing is None:
        return {
            "images_per_second": None, "latency_p50_ms": None, "latency_p90_ms": None, "latency_p99_ms": None,
            "latency_mean_ms": None, "iterations": 0, "warmup_iterations": 0, "timed_seconds": None,
        }
    import numpy as np

    latencies_ms = np.asarray(timing.latencies_s) * 1000.0
    p50, p90, p99 = np.percentile(latencies_ms, [50, 90, 99])
    return {
        "images_per_second": batch_size * len(latencies_ms) / timing.total_s if timing.total_s > 0 else None,
        "latency_p50_ms": float(p50),
        "latency_p90_ms": float(p90),
        "latency_p99_ms": float(p99),
        "latency_mean_ms": float(latencies_ms.mean()),
        "iterations": len(latencies_ms),
        "warmup_iterations": timing.warmup_iterations,
        "timed_seconds": timing.total_s,
    }


# -- inputs -----------------------------------------------------------------------------------------


def load_check_images(
    *, manifest_path: Path, dataset_root: Path, data_config: dict[str, Any], count: int, dataset: str
) -> CheckImages:
    """Decode and preprocess the first ``count`` decodable images of a manifest, as evaluation does.

    Files that fail to decode are skipped. Fewer than ``count`` images are used when the
    dataset has fewer.
    """
    import polars as pl
    import torch

    from imagebench.errors import DatasetError
    from imagebench.images import decode_rgb
    from imagebench.preprocess import build_transform

    transform = build_transform(data_config)
    paths = pl.scan_parquet(manifest_path).select("path").collect()["path"].to_list()
    tensors = []
    for relative in paths:
        decoded = decode_rgb(Path(dataset_root) / relative)
        if decoded.error is not None:
            _LOGGER.info("skipping %s for the pre-flight check: %s", relative, decoded.error)
            continue
        tensors.append(transform(decoded.image))
        if len(tensors) == count:
            break

    if not tensors:
        raise DatasetError(
            f"no image of {manifest_path} (root {dataset_root}) decodes, so the throughput pre-flight check "
            "has no input; fix the dataset or set throughput.dataset: null for random inputs"
        )
    if len(tensors) < count:
        _LOGGER.info("the pre-flight check uses %d images, fewer than check_images=%d", len(tensors), count)
    return CheckImages(tensors=torch.stack(tensors), source=f"dataset:{dataset}")


def random_check_images(*, input_size: Sequence[int], count: int, seed: int) -> CheckImages:
    """Return ``count`` seeded standard-normal images, the input when no dataset is configured."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    tensors = torch.randn((count, *input_size), generator=generator)
    return CheckImages(tensors=tensors, source=f"random-normal(seed={seed})")


# -- summary for the leaderboard --------------------------------------------------------------------


def summary_schema() -> dict[str, Any]:
    """Return the schema of ``summarize_throughput``: model, then the same columns per device type."""
    import polars as pl

    schema: dict[str, Any] = {"model": pl.String}
    for device_type in DEVICE_TYPES:
        schema.update({
            f"{device_type}_images_per_second": pl.Float64,
            f"{device_type}_setting": pl.String,
            f"{device_type}_batch_size": pl.Int64,
            f"{device_type}_dtype": pl.String,
            f"{device_type}_channels_last": pl.Boolean,
            f"{device_type}_peak_memory_mb": pl.Float64,
            f"{device_type}_batch1_p50_ms": pl.Float64,
            f"{device_type}_device_name": pl.String,
        })
    schema["invalid_settings"] = pl.String
    return schema


def summarize_throughput(paths: Sequence[Path]) -> pl.DataFrame:
    """Reduce measurement files to one row per model, for joining onto the leaderboard by ``model``.

    Per device type: the valid setting with the most images per second (with its batch
    size, dtype, channels_last and peak memory), and the lowest p50 latency among valid
    batch-1 settings. ``invalid_settings`` lists the settings that failed the pre-flight
    check, comma-separated (empty when none did), as text so that the leaderboard
    stays writable as CSV. Columns of a device type without valid measurements are null.
    """
    import polars as pl

    schema = summary_schema()
    if not paths:
        return pl.DataFrame(schema=schema)
    measurements = pl.scan_parquet([str(path) for path in paths]).collect()

    summary = measurements.select("model").unique().sort("model")
    for device_type in DEVICE_TYPES:
        summary = summary.join(_best_per_device(measurements, device_type), on="model", how="left")
    invalid = (
        measurements.filter(~pl.col("valid"))
        .group_by("model")
        .agg(pl.col("setting").sort().str.join(", ").alias("invalid_settings"))
    )
    summary = summary.join(invalid, on="model", how="left").with_columns(pl.col("invalid_settings").fill_null(""))
    return summary.select(list(schema)).cast(schema)


def _best_per_device(measurements: pl.DataFrame, device_type: str) -> pl.DataFrame:
    import polars as pl

    valid = measurements.filter(pl.col("valid") & (pl.col("device_type") == device_type))
    best = (
        valid.sort(["images_per_second", "setting"], descending=[True, False])
        .group_by("model", maintain_order=True)
        .first()
        .select(
            "model",
            pl.col("images_per_second").alias(f"{device_type}_images_per_second"),
            pl.col("setting").alias(f"{device_type}_setting"),
            pl.col("batch_size").alias(f"{device_type}_batch_size"),
            pl.col("dtype").alias(f"{device_type}_dtype"),
            pl.col("channels_last").alias(f"{device_type}_channels_last"),
            pl.col("peak_memory_mb").alias(f"{device_type}_peak_memory_mb"),
            pl.col("device_name").alias(f"{device_type}_device_name"),
        )
    )
    latency = (
        valid.filter(pl.col("batch_size") == 1)
        .group_by("model")
        .agg(pl.col("latency_p50_ms").min().alias(f"{device_type}_batch1_p50_ms"))
    )
    return best.join(latency, on="model", how="full", coalesce=True)


# -- workflow steps ---------------------------------------------------------------------------------


@job
def measure_throughput_step(snakemake: Any) -> None:
    """Run rule measure_throughput: load the checkpoint, measure one setting and write its row."""
    import json

    from imagebench.checkpoints.load import load_model
    from imagebench.io import sha256_file, write_parquet_atomic
    from imagebench.preprocess import describe_preprocessing, resolve_preprocessing
    from imagebench.runtime import run_record, select_device

    params = snakemake.params
    setting = ThroughputSetting.from_config(snakemake.wildcards.setting, dict(params.setting))
    options = TimingOptions.from_config(dict(params.options))
    model = load_model(
        checkpoint=Path(snakemake.input.checkpoint),
        architecture=params.architecture,
        pretrained_cfg=params.pretrained_cfg,
    )
    overrides = dict(params.preprocessing or {})
    if setting.img_size is not None:
        overrides["img_size"] = setting.img_size
    data_config = resolve_preprocessing(model, overrides)

    if hasattr(snakemake.input, "manifest"):
        images = load_check_images(
            manifest_path=Path(snakemake.input.manifest), dataset_root=Path(params.dataset_root),
            data_config=data_config, count=options.check_images, dataset=params.dataset,
        )
    else:
        images = random_check_images(input_size=data_config["input_size"], count=options.check_images, seed=options.seed)

    row = measure_throughput(
        model=model, model_name=snakemake.wildcards.model, architecture=params.architecture, setting=setting,
        options=options, images=images,
        checkpoint_sha256=sha256_file(snakemake.input.checkpoint),
    )
    record = {"setting": asdict(setting), "options": asdict(options), "preprocessing": describe_preprocessing(data_config)}
    write_parquet_atomic(
        row,
        Path(snakemake.output.measurement),
        metadata={
            "imagebench.throughput": json.dumps(record, sort_keys=True),
            "imagebench.run": json.dumps(run_record(select_device(setting.device)), sort_keys=True),
        },
    )


@job
def plot_pareto_step(snakemake: Any) -> None:
    """Run rule plot_pareto: draw top-1 against images per second, with the Pareto front."""
    import polars as pl

    from imagebench.figures import FigureSettings, save_figure
    from imagebench.pareto import accuracy_throughput_table, plot_accuracy_vs_throughput

    settings = FigureSettings.from_config(snakemake.params.figures)
    table = accuracy_throughput_table(leaderboard=pl.read_parquet(snakemake.input.leaderboard))
    figure = plot_accuracy_vs_throughput(table)
    save_figure(figure, Path(snakemake.output.png), settings)
    save_figure(figure, Path(snakemake.output.svg), settings)
