"""Throughput measurement: warm-up excluded from timing, settings recorded, wrong settings rejected untimed."""

import copy
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
from torch import nn

from conftest import sample_files
from helpers import write_synset_manifest
from imagebench import throughput
from imagebench.errors import ConfigError, DatasetError
from imagebench.io import write_parquet_atomic
from imagebench.preprocess import resolve_preprocessing
from imagebench.throughput import (
    CheckImages,
    ThroughputSetting,
    TimingOptions,
    load_check_images,
    measure_throughput,
    measurement_schema,
    random_check_images,
    summarize_throughput,
    time_forward,
)
from workflow_runner import LITE0, snakemake, write_config

TINY = TimingOptions(warmup_iterations=2, min_iterations=3, min_seconds=0.0, max_seconds=60.0, check_images=8)


class ForwardCounter:
    """A forward hook that counts calls and keeps the input of the last one."""

    def __init__(self, module: nn.Module):
        self.calls = 0
        self.last_input: torch.Tensor | None = None
        module.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        self.calls += 1
        self.last_input = inputs[0]


class TransposesChannelsLast(nn.Module):
    """Swaps height and width of channels_last inputs, as a kernel that misreads the strides would."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.is_contiguous(memory_format=torch.channels_last) and not batch.is_contiguous():
            batch = batch.transpose(2, 3)
        return self.model(batch)


class OverflowsInHalf(nn.Module):
    """Lite0 whose pooled features pass through x * 1e6 / 1e6: exact in float32, inf in float16 (max 65504)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        features = self.model.forward_head(self.model.forward_features(batch), pre_logits=True)
        return self.model.classifier(features * 1e6 / 1e6)


@pytest.fixture
def check_images(lite0_model, small_sample: Path, tmp_path: Path) -> CheckImages:
    manifest = tmp_path / "manifest.parquet"
    write_synset_manifest(small_sample, manifest, num_shards=1)
    return load_check_images(
        manifest_path=manifest, dataset_root=small_sample, data_config=resolve_preprocessing(lite0_model),
        count=8, dataset="sample",
    )


def _measure(model: nn.Module, images: CheckImages, *, options: TimingOptions = TINY, **setting) -> dict:
    # One thread: two threads on a machine whose cores other jobs also use slow down the test many times over.
    setting.setdefault("threads", 1)
    row = measure_throughput(
        model=model, model_name="efficientnet_lite0", architecture="tf_efficientnet_lite0",
        setting=ThroughputSetting(name="test", **setting), options=options, images=images,
        checkpoint_sha256="0" * 64,
    )
    assert dict(row.schema) == measurement_schema()
    return row.row(0, named=True)


# -- timing loop ---------------------------------------------------------------------------------


def test_time_forward_excludes_warmup():
    events = []

    def forward():
        events.append("forward")

    # A clock that advances by one per forward call: a timed interval that held a warm-up
    # call, or more than one call, would show as a latency other than 1.
    def clock():
        return float(events.count("forward"))

    options = TimingOptions(warmup_iterations=3, min_iterations=4, min_seconds=0.0)
    result = time_forward(
        forward, synchronize=lambda: None, options=options, after_warmup=lambda: events.append("reset"), clock=clock
    )

    assert events == ["forward"] * 3 + ["reset"] + ["forward"] * 4
    assert result.latencies_s == [1.0, 1.0, 1.0, 1.0]
    assert result.total_s == 4.0
    assert result.warmup_iterations == 3


def test_time_forward_runs_until_min_seconds():
    calls = []
    options = TimingOptions(warmup_iterations=0, min_iterations=2, min_seconds=5.0)
    result = time_forward(
        lambda: calls.append(1), synchronize=lambda: None, options=options, clock=lambda: float(len(calls))
    )
    assert len(result.latencies_s) == 5


def test_time_forward_stops_at_max_seconds():
    calls = []
    options = TimingOptions(warmup_iterations=0, min_iterations=100, min_seconds=0.0, max_seconds=3.0)
    result = time_forward(
        lambda: calls.append(1), synchronize=lambda: None, options=options, clock=lambda: float(len(calls))
    )
    assert len(result.latencies_s) == 3


def test_time_forward_synchronizes_every_iteration():
    order = []
    options = TimingOptions(warmup_iterations=1, min_iterations=2, min_seconds=0.0)
    time_forward(lambda: order.append("forward"), synchronize=lambda: order.append("sync"), options=options)
    assert order == ["forward", "sync", "forward", "sync", "forward", "sync"]


# -- measurement of a real model ---------------------------------------------------------------------


def test_measurement_records_setting(lite0_model, check_images: CheckImages):
    row = _measure(copy.deepcopy(lite0_model), check_images, batch_size=4, channels_last=True, threads=1)

    assert row["valid"] is True
    assert row["invalid_reason"] is None
    assert row["top1_agreement"] == 1.0
    assert row["check_images"] == 8
    assert row["check_inputs"] == "dataset:sample"
    assert row["device"] == "cpu"
    assert row["device_type"] == "cpu"
    assert row["device_name"]
    assert row["batch_size"] == 4
    assert row["dtype"] == "float32"
    assert row["amp"] is False
    assert row["channels_last"] is True
    assert row["compile"] is False
    assert row["input_size"] == [3, 224, 224]
    assert row["img_size"] == 224
    assert row["threads"] == 1
    assert row["torch"] == torch.__version__
    assert row["timm"]
    assert row["host"]
    assert row["param_count"] == 4_652_008
    assert row["checkpoint_sha256"] == "0" * 64
    assert row["peak_memory_mb"] > 0
    assert row["peak_memory_kind"] in {"peak_rss_timed", "peak_rss_process"}
    assert row["latency_p50_ms"] <= row["latency_p90_ms"] <= row["latency_p99_ms"]
    assert row["images_per_second"] > 0


def test_measurement_times_only_after_warmup(lite0_model, check_images: CheckImages):
    model = copy.deepcopy(lite0_model)
    counter = ForwardCounter(model)
    row = _measure(model, check_images, batch_size=4)

    # Pre-flight: one float32 reference batch (8 images fit in one) and two batches of 4 in the setting.
    preflight_calls = 1 + 2
    assert row["warmup_iterations"] == TINY.warmup_iterations
    assert row["iterations"] >= TINY.min_iterations
    assert counter.calls == preflight_calls + row["warmup_iterations"] + row["iterations"]


def test_timed_batch_is_real_images(lite0_model, check_images: CheckImages):
    model = copy.deepcopy(lite0_model)
    counter = ForwardCounter(model)
    _measure(model, check_images, batch_size=12, channels_last=True)

    timed = counter.last_input
    assert timed.shape == (12, 3, 224, 224)
    assert timed.is_contiguous(memory_format=torch.channels_last)
    # Twelve images from eight: the batch repeats the real images in order.
    assert torch.equal(timed[:8], check_images.tensors)
    assert torch.equal(timed[8:], check_images.tensors[:4])


def test_preflight_rejects_channels_last_bug(lite0_model, check_images: CheckImages):
    model = TransposesChannelsLast(copy.deepcopy(lite0_model))
    counter = ForwardCounter(model)
    row = _measure(model, check_images, batch_size=4, channels_last=True)

    assert row["valid"] is False
    assert "agrees with float32" in row["invalid_reason"]
    assert row["top1_agreement"] < 0.99
    assert row["non_finite_logits"] == 0
    assert row["images_per_second"] is None
    assert row["latency_p50_ms"] is None
    assert row["iterations"] == 0
    # Only the pre-flight ran: one reference batch and two batches in the setting.
    assert counter.calls == 3


def test_same_wrapper_passes_without_channels_last(lite0_model, check_images: CheckImages):
    row = _measure(TransposesChannelsLast(copy.deepcopy(lite0_model)), check_images, batch_size=4)
    assert row["valid"] is True


def test_preflight_rejects_float16_overflow(lite0_model, check_images: CheckImages):
    row = _measure(OverflowsInHalf(copy.deepcopy(lite0_model)), check_images, batch_size=4, amp_dtype="float16")

    assert row["valid"] is False
    assert "NaN or inf logits in float16" in row["invalid_reason"]
    assert row["non_finite_logits"] > 0
    assert row["images_per_second"] is None


def test_overflow_model_is_valid_in_float32(lite0_model, check_images: CheckImages):
    row = _measure(OverflowsInHalf(copy.deepcopy(lite0_model)), check_images, batch_size=4)
    assert row["valid"] is True
    assert row["top1_agreement"] == 1.0


def test_min_agreement_threshold_applies(lite0_model, check_images: CheckImages):
    lenient = TimingOptions(**{**TINY.__dict__, "min_agreement": 0.0})
    row = _measure(
        TransposesChannelsLast(copy.deepcopy(lite0_model)), check_images, options=lenient,
        batch_size=4, channels_last=True,
    )
    assert row["valid"] is True


def test_random_inputs_without_dataset(lite0_model):
    images = random_check_images(input_size=(3, 224, 224), count=4, seed=0)
    again = random_check_images(input_size=(3, 224, 224), count=4, seed=0)

    assert torch.equal(images.tensors, again.tensors)
    assert images.tensors.abs().sum() > 0
    row = _measure(copy.deepcopy(lite0_model), images, batch_size=2)
    assert row["check_inputs"] == "random-normal(seed=0)"
    assert row["valid"] is True


@pytest.mark.slow
def test_compiled_setting_checked_and_timed(lite0_model, check_images: CheckImages):
    row = _measure(copy.deepcopy(lite0_model), check_images, batch_size=4, compile=True)

    assert row["compile"] is True
    assert row["valid"] is True, row["invalid_reason"]
    assert row["top1_agreement"] == 1.0
    assert row["iterations"] >= TINY.min_iterations


def test_cuda_setting_without_gpu_rejected(lite0_model, check_images: CheckImages):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="no CUDA device"):
        _measure(copy.deepcopy(lite0_model), check_images, device="cuda")


# -- check images ----------------------------------------------------------------------------------


def test_check_images_skip_undecodable(lite0_model, sample_dir: Path, bad_images_dir: Path, tmp_path: Path):
    root = tmp_path / "mixed"
    root.mkdir()
    for image in sample_files(sample_dir, 2) + [bad_images_dir / "n01491361_truncated.JPEG"]:
        shutil.copy(image, root / image.name)
    manifest = tmp_path / "manifest.parquet"
    write_synset_manifest(root, manifest, num_shards=1)

    images = load_check_images(
        manifest_path=manifest, dataset_root=root, data_config=resolve_preprocessing(lite0_model), count=8,
        dataset="mixed",
    )
    assert images.tensors.shape == (2, 3, 224, 224)


def test_check_images_none_decodable(lite0_model, bad_images_dir: Path, tmp_path: Path):
    root = tmp_path / "bad"
    root.mkdir()
    for name in ("n01491361_truncated.JPEG", "n01491361_empty.JPEG"):
        shutil.copy(bad_images_dir / name, root / name)
    manifest = tmp_path / "manifest.parquet"
    write_synset_manifest(root, manifest, num_shards=1)

    with pytest.raises(DatasetError, match="no image of"):
        load_check_images(
            manifest_path=manifest, dataset_root=root, data_config=resolve_preprocessing(lite0_model), count=8,
            dataset="bad",
        )


# -- summary ---------------------------------------------------------------------------------------


def _measurement(model: str, setting: str, **values) -> pl.DataFrame:
    row = {key: None for key in measurement_schema()}
    row.update(
        model=model, setting=setting, valid=True, device="cpu", device_type="cpu", device_name="Xeon",
        batch_size=1, dtype="float32", channels_last=False, images_per_second=10.0, latency_p50_ms=100.0,
        peak_memory_mb=500.0,
    )
    row.update(values)
    return pl.DataFrame([row], schema=measurement_schema())


def test_summary_picks_best_valid_setting(tmp_path: Path):
    rows = {
        "a-cpu-b1": _measurement("a", "cpu-b1", images_per_second=20.0, latency_p50_ms=50.0),
        "a-cpu-b32": _measurement("a", "cpu-b32", batch_size=32, images_per_second=80.0, latency_p50_ms=400.0,
                                  peak_memory_mb=900.0),
        # Faster but invalid: it must not be chosen.
        "a-cpu-bf16": _measurement("a", "cpu-bf16", batch_size=32, dtype="bfloat16", valid=False,
                                   invalid_reason="NaN", images_per_second=None),
        "a-cuda-fp16-b1": _measurement("a", "cuda-fp16-b1", device="cuda:0", device_type="cuda", valid=False,
                                       invalid_reason="NaN", images_per_second=None),
        "a-cuda": _measurement("a", "cuda-b256", device="cuda:0", device_type="cuda", device_name="H100",
                               batch_size=256, dtype="float16", images_per_second=5000.0, peak_memory_mb=3000.0),
        "b-cpu-b1": _measurement("b", "cpu-b1", images_per_second=5.0, latency_p50_ms=200.0),
    }
    paths = []
    for name, frame in rows.items():
        path = tmp_path / f"{name}.parquet"
        write_parquet_atomic(frame, path)
        paths.append(path)

    summary = summarize_throughput(paths)
    assert summary["model"].to_list() == ["a", "b"]
    a, b = summary.rows(named=True)

    assert a["cpu_images_per_second"] == 80.0
    assert a["cpu_setting"] == "cpu-b32"
    assert a["cpu_batch_size"] == 32
    assert a["cpu_dtype"] == "float32"
    assert a["cpu_peak_memory_mb"] == 900.0
    assert a["cpu_batch1_p50_ms"] == 50.0
    assert a["cpu_device_name"] == "Xeon"
    assert a["cuda_images_per_second"] == 5000.0
    assert a["cuda_dtype"] == "float16"
    assert a["cuda_batch1_p50_ms"] is None
    assert a["invalid_settings"] == "cpu-bf16, cuda-fp16-b1"

    assert b["cpu_images_per_second"] == 5.0
    assert b["cuda_images_per_second"] is None
    assert b["invalid_settings"] == ""

    # The leaderboard is also written as CSV, which has no nested types.
    summary.write_csv(tmp_path / "summary.csv")


def test_summary_of_no_files_is_empty():
    summary = summarize_throughput([])
    assert summary.is_empty()
    assert "cpu_images_per_second" in summary.columns


# -- config ----------------------------------------------------------------------------------------


def _config(**section) -> dict:
    return {"datasets": {"first": {}, "second": {}}, "models": {"m": {}}, "throughput": section}


def test_default_settings_without_gpu(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(throughput, "_nvidia_gpu_visible", lambda: False)
    settings = throughput.throughput_settings({"datasets": {"first": {}}, "models": {}})
    assert list(settings) == ["cpu-fp32-b1", "cpu-fp32-b32"]
    assert settings["cpu-fp32-b32"]["batch_size"] == 32
    assert settings["cpu-fp32-b32"]["amp_dtype"] is None


def test_default_settings_with_cuda_requested(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(throughput, "_nvidia_gpu_visible", lambda: False)
    settings = throughput.throughput_settings(_config(devices=["cpu", "cuda"]))
    cuda = {name: entry for name, entry in settings.items() if entry["device"] == "cuda"}
    assert len(cuda) == 9
    assert {entry["amp_dtype"] for entry in cuda.values()} == {None, "bfloat16", "float16"}
    assert {entry["batch_size"] for entry in cuda.values()} == {1, 32, 256}
    assert all(throughput.setting_gpus(entry) == 1 for entry in cuda.values())
    assert throughput.setting_gpus(settings["cpu-fp32-b1"]) == 0


def test_configured_settings_replace_defaults():
    settings = throughput.throughput_settings(
        _config(devices=["cpu"], settings={"fast": {"batch_size": 8, "channels_last": True}})
    )
    assert settings == {
        "fast": {
            "device": "cpu", "batch_size": 8, "amp_dtype": None, "channels_last": True, "compile": False,
            "threads": 2, "img_size": None,
        }
    }


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"batchsize": 8}, "unknown key"),
        ({"device": "gpu"}, "device: 'gpu' is not allowed"),
        ({"amp_dtype": "float8"}, "amp_dtype: 'float8' is not allowed"),
        ({"batch_size": 0}, "batch_size: 0 is out of range"),
    ],
)
def test_invalid_setting_rejected(entry: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        throughput.throughput_settings(_config(devices=["cpu"], settings={"bad": entry}))


def test_invalid_devices_rejected():
    with pytest.raises(ConfigError, match="throughput.devices"):
        throughput.throughput_settings(_config(devices=["tpu"]))


def test_throughput_dataset_choice():
    assert throughput.throughput_dataset(_config()) == "first"
    assert throughput.throughput_dataset(_config(dataset="second")) == "second"
    assert throughput.throughput_dataset(_config(dataset=None)) is None
    with pytest.raises(ConfigError, match="'third' is not a dataset"):
        throughput.throughput_dataset(_config(dataset="third"))


def test_inputs_name_manifest_of_check_dataset():
    config = _config(dataset="second")
    config["datasets"]["second"] = {"root": "/data/second"}
    assert throughput.throughput_inputs(config, "m") == {
        "checkpoint": "results/checkpoints/m.safetensors",
        "manifest": "results/datasets/second/manifest.parquet",
    }
    assert throughput.throughput_dataset_root(config) == "/data/second"
    assert throughput.throughput_inputs(_config(dataset=None), "m") == {"checkpoint": "results/checkpoints/m.safetensors"}
    assert throughput.throughput_dataset_root(_config(dataset=None)) is None


def test_timing_options_filled_and_checked():
    assert throughput.timing_options(_config(min_seconds=1.5))["min_seconds"] == 1.5
    assert throughput.timing_options({"datasets": {}})["warmup_iterations"] == 10
    with pytest.raises(ConfigError, match="min_agreement"):
        throughput.timing_options(_config(min_agreement=99))


# -- workflow --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_workflow_measures_and_plots(sample_dir: Path, tmp_path: Path):
    images = tmp_path / "images"
    images.mkdir()
    for source in sample_files(sample_dir, 6):
        (images / source.name).symlink_to(source)
    section = {
        "warmup_iterations": 1, "min_iterations": 2, "min_seconds": 0.0, "check_images": 4,
        "devices": ["cpu"],
        "settings": {"cpu-b1": {"batch_size": 1, "threads": 1}, "cpu-b4-cl": {"batch_size": 4, "channels_last": True}},
    }
    write_config(
        tmp_path,
        {
            "datasets": {"sample": {"layout": "synset-files", "root": str(images), "shards": 1}},
            "models": {"efficientnet_lite0": LITE0},
            "evaluation": {"device": "cpu", "batch_size": 8, "workers": 0, "threads": 1},
            "figures": {"human_top5": 94.9, "width": 6, "height": 3, "dpi": 60},
            "throughput": section,
        },
    )
    snakemake(tmp_path, "--cores", "2", "results/figures/accuracy_vs_throughput.png")

    results = tmp_path / "results"
    for setting in ("cpu-b1", "cpu-b4-cl"):
        row = pl.read_parquet(results / "throughput" / "efficientnet_lite0" / f"{setting}.parquet").row(0, named=True)
        assert row["valid"] is True, row["invalid_reason"]
        assert row["check_inputs"] == "dataset:sample"
        assert row["check_images"] == 4
    assert (results / "figures" / "accuracy_vs_throughput.png").stat().st_size > 0
    assert (results / "figures" / "accuracy_vs_throughput.svg").stat().st_size > 0
    assert (results / "logs" / "measure_throughput" / "efficientnet_lite0" / "cpu-b1.log").stat().st_size > 0
