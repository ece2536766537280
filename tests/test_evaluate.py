import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
from timm.data import create_dataset, create_loader, resolve_data_config

from helpers import write_synset_manifest
from imagebench.evaluate import PREDICTION_SCHEMA, EvaluationSettings, evaluate_shard, read_prediction_metadata
from imagebench.io import read_parquet_metadata


def _evaluate(model, root: Path, tmp_path: Path, *, shard=0, num_shards=1, settings=None, overrides=None, name="out"):
    manifest = tmp_path / f"{name}-manifest.parquet"
    write_synset_manifest(root, manifest, num_shards=num_shards)
    output = tmp_path / f"{name}.parquet"
    evaluate_shard(
        manifest_path=manifest,
        dataset_root=root,
        shard=shard,
        num_shards=num_shards,
        dataset="sample",
        model_name="efficientnet_lite0",
        model=model,
        checkpoint_sha256="0" * 64,
        output=output,
        settings=settings or EvaluationSettings(batch_size=8, workers=1, threads=2),
        preprocessing_overrides=overrides,
    )
    return output


def test_prediction_file_schema_and_metadata(lite0_model, small_sample: Path, tmp_path: Path):
    output = _evaluate(lite0_model, small_sample, tmp_path)
    frame = pl.read_parquet(output)
    assert dict(frame.schema) == PREDICTION_SCHEMA
    assert frame.height == 16
    assert (frame["status"] == "ok").all()
    assert frame["top5_indices"].list.len().to_list() == [5] * 16

    metadata = read_prediction_metadata(output)
    assert metadata["preprocessing"]["img_size"] == 224
    assert metadata["preprocessing"]["crop_pct"] == 0.875
    assert metadata["preprocessing"]["interpolation"] == "bicubic"
    assert metadata["run"]["device"] == "cpu"


# timm's ImageDataset hands open file objects to Pillow and never closes them.
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_top1_matches_timm_reference_loop(lite0_model, small_sample: Path, tmp_path: Path):
    output = _evaluate(lite0_model, small_sample, tmp_path)
    ours = pl.read_parquet(output).sort("path")

    # The reference: timm's own dataset, loader and data config, as its validate.py uses them.
    data_config = resolve_data_config(model=lite0_model)
    dataset = create_dataset(name="", root=str(small_sample), split="validation")
    loader = create_loader(dataset, batch_size=8, use_prefetcher=False, num_workers=0, **data_config)
    top1 = []
    with torch.inference_mode():
        for batch, _ in loader:
            top1.extend(lite0_model(batch).argmax(dim=1).tolist())
    reference = dict(zip((dataset.filename(index) for index in range(len(dataset))), top1))
    assert dict(zip(ours["path"], ours["top5_indices"].list.first())) == reference


def test_bad_images_recorded_not_fatal(lite0_model, bad_images_dir: Path, small_sample: Path, tmp_path: Path):
    root = tmp_path / "mixed"
    root.mkdir()
    for image in list(small_sample.iterdir())[:3] + list(bad_images_dir.iterdir()):
        shutil.copy(image, root / image.name)

    frame = pl.read_parquet(_evaluate(lite0_model, root, tmp_path))
    failed = frame.filter(pl.col("status") == "failed")
    assert sorted(failed["image_id"].to_list()) == [
        "n01491361_empty", "n01491361_not-an-image", "n01491361_truncated",
    ]
    assert failed["error"].null_count() == 0
    assert failed["top5_indices"].null_count() == 3
    assert not failed["correct_top1"].any()
    decoded = frame.filter(pl.col("image_id").is_in(["n01491361_cmyk", "n01491361_png-named-jpeg"]))
    assert (decoded["status"] == "ok").all()
    # Both are the tiger shark of the sample, class 3.
    assert decoded["correct_top1"].all()


def test_shards_partition_the_dataset(lite0_model, small_sample: Path, tmp_path: Path):
    outputs = [
        _evaluate(lite0_model, small_sample, tmp_path, shard=shard, num_shards=3, name=f"shard{shard}")
        for shard in range(3)
    ]
    frames = [pl.read_parquet(path) for path in outputs]
    ids = [image_id for frame in frames for image_id in frame["image_id"]]
    assert sorted(ids) == sorted(path.stem for path in small_sample.iterdir())
    assert len(ids) == len(set(ids))


def test_rerun_gives_identical_bytes(lite0_model, small_sample: Path, tmp_path: Path):
    first = _evaluate(lite0_model, small_sample, tmp_path, name="first").read_bytes()
    second = _evaluate(lite0_model, small_sample, tmp_path, name="second").read_bytes()
    assert first == second


def test_preprocessing_override_recorded(lite0_model, small_sample: Path, tmp_path: Path):
    output = _evaluate(lite0_model, small_sample, tmp_path, overrides={"img_size": 256, "crop_pct": 1.0})
    metadata = json.loads(read_parquet_metadata(output)["imagebench"])
    assert metadata["preprocessing"]["input_size"] == [3, 256, 256]
    assert metadata["preprocessing"]["crop_pct"] == 1.0


def test_cuda_request_without_gpu_rejected(lite0_model, small_sample: Path, tmp_path: Path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from imagebench.errors import ConfigError

    with pytest.raises(ConfigError, match="no CUDA device"):
        _evaluate(lite0_model, small_sample, tmp_path, settings=EvaluationSettings(device="cuda"))


def test_channels_last_and_bf16_agree_on_top1(lite0_model, small_sample: Path, tmp_path: Path):
    reference = pl.read_parquet(_evaluate(lite0_model, small_sample, tmp_path, name="fp32"))
    variant = pl.read_parquet(
        _evaluate(
            lite0_model, small_sample, tmp_path, name="bf16",
            settings=EvaluationSettings(batch_size=8, amp_dtype="bfloat16", channels_last=True),
        )
    )
    agreement = (reference["top5_indices"].list.first() == variant["top5_indices"].list.first()).mean()
    assert agreement >= 0.9


def test_class_mask_restricts_predictions(lite0_model, small_sample: Path, tmp_path: Path):
    manifest = tmp_path / "subset-manifest.parquet"
    frame = write_synset_manifest(small_sample, manifest, num_shards=1)
    mask = sorted(frame["label"].to_list())
    from imagebench.io import write_parquet_atomic

    write_parquet_atomic(
        frame, manifest, metadata={"num_shards": "1", "class_mask": json.dumps(mask), "layout": "imagefolder"}
    )
    output = tmp_path / "subset.parquet"
    evaluate_shard(
        manifest_path=manifest, dataset_root=small_sample, shard=0, num_shards=1, dataset="subset",
        model_name="efficientnet_lite0", model=lite0_model, checkpoint_sha256="0" * 64, output=output,
        settings=EvaluationSettings(batch_size=8),
    )
    predictions = pl.read_parquet(output)
    predicted = {index for row in predictions["top5_indices"] for index in row}
    assert predicted <= set(mask)
    assert read_prediction_metadata(output)["class_mask"] == mask
    # The true class's log-probability is taken over the 16 classes only, so it is at least log(1/16) on average.
    assert predictions["true_class_logprob"].mean() > -2.8
