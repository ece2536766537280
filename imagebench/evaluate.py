"""Evaluation of one shard of a dataset with one model, written to a Parquet file."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from imagebench.config import settings_from_section
from imagebench.images import decode_rgb
from imagebench.io import read_parquet_metadata, write_parquet_atomic
from imagebench.predictions import PREDICTION_SCHEMA, read_prediction_metadata  # noqa: F401 (re-exported)
from imagebench.preprocess import build_transform, describe_preprocessing, resolve_preprocessing
from imagebench.runtime import library_versions, resolve_amp_dtype, run_record, select_device

_LOGGER = logging.getLogger(__name__)

TOP_K = 5

@dataclass(frozen=True)
class EvaluationSettings:
    device: str = "auto"
    batch_size: int = 32
    amp_dtype: str | None = None
    channels_last: bool = False
    workers: int = 1
    threads: int = 2

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> EvaluationSettings:
        return settings_from_section(cls, section)


@dataclass
class _ShardOutputs:
    rows: list[int] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)
    top5_indices: list[np.ndarray] = field(default_factory=list)
    top5_probs: list[np.ndarray] = field(default_factory=list)
    true_class_logprob: list[np.ndarray] = field(default_factory=list)


class ShardImages(Dataset):
    """The images of one shard, decoded and preprocessed; a failure becomes an error string."""

    def __init__(self, *, root: Path, paths: list[str], transform, input_size: tuple[int, int, int]):
        self.root = root
        self.paths = paths
        self.transform = transform
        self.input_size = input_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, str]:
        decoded = decode_rgb(self.root / self.paths[index])
        if decoded.error is not None:
            return index, torch.zeros(self.input_size), decoded.error
        try:
            tensor = self.transform(decoded.image)
        except (OSError, ValueError, RuntimeError) as error:
            return index, torch.zeros(self.input_size), f"{type(error).__name__}: preprocessing failed: {error}"
        return index, tensor, ""


def evaluate_shard(
    *,
    manifest_path: Path,
    dataset_root: Path,
    shard: int,
    num_shards: int,
    dataset: str,
    model_name: str,
    model: torch.nn.Module,
    checkpoint_sha256: str,
    output: Path,
    settings: EvaluationSettings,
    preprocessing_overrides: dict[str, Any] | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> pl.DataFrame:
    """Evaluate ``model`` on one shard of a dataset manifest and write the predictions atomically."""
    torch.set_num_threads(settings.threads)
    device = select_device(settings.device)
    amp_dtype = resolve_amp_dtype(settings.amp_dtype)
    record = run_record(device)
    _LOGGER.info(
        "running on host %s, device %s (%s), SLURM job %s",
        record["host"], record["device"], record["device_name"], record["slurm_job_id"] or "none",
    )

    manifest, manifest_metadata = _read_shard(manifest_path, shard=shard, num_shards=num_shards)
    class_mask = _class_mask(manifest_metadata)
    data_config = resolve_preprocessing(model, preprocessing_overrides)
    _LOGGER.info(
        "evaluating %s on %s shard %d of %d: %d images on %s, preprocessing %s",
        model_name, dataset, shard, num_shards, manifest.height, device, describe_preprocessing(data_config),
    )

    model = _prepare_model(model, device=device, channels_last=settings.channels_last)
    images = ShardImages(
        root=dataset_root,
        paths=manifest["path"].to_list(),
        transform=build_transform(data_config),
        input_size=tuple(data_config["input_size"]),
    )
    labels = torch.from_numpy(manifest["label"].to_numpy().astype(np.int64))
    outputs = _run_model(
        model, images, labels, device=device, amp_dtype=amp_dtype, settings=settings, class_mask=class_mask,
        description=f"{model_name}/{dataset}/shard-{shard}",
    )

    predictions = _predictions_frame(
        manifest, outputs, dataset=dataset, model_name=model_name, checkpoint_sha256=checkpoint_sha256
    )
    metadata = {
        "dataset": dataset,
        "model": model_name,
        "shard": shard,
        "num_shards": num_shards,
        "checkpoint_sha256": checkpoint_sha256,
        "preprocessing": describe_preprocessing(data_config),
        "pretrained_preprocessing": describe_preprocessing(resolve_preprocessing(model)),
        "evaluation": {
            "device_type": device.type,
            "batch_size": settings.batch_size,
            "amp_dtype": settings.amp_dtype,
            "channels_last": settings.channels_last,
        },
        "class_mask": class_mask,
        "versions": library_versions(),
        **(extra_metadata or {}),
    }
    write_parquet_atomic(
        predictions,
        output,
        metadata={
            "imagebench": json.dumps(metadata, sort_keys=True),
            "imagebench.run": json.dumps(record, sort_keys=True),
        },
    )
    failed = int((predictions["status"] != "ok").sum())
    _LOGGER.info("wrote %s: %d images, %d failed to decode", output, predictions.height, failed)
    return predictions


def _read_shard(manifest_path: Path, *, shard: int, num_shards: int) -> tuple[pl.DataFrame, dict[str, str]]:
    metadata = read_parquet_metadata(manifest_path)
    manifest_shards = int(metadata.get("num_shards", num_shards))
    if manifest_shards != num_shards:
        raise ValueError(
            f"{manifest_path} is split into {manifest_shards} shards but shard {shard} of {num_shards} was "
            "requested; rebuild the manifest after changing the shard count"
        )
    frame = pl.scan_parquet(manifest_path).filter(pl.col("shard") == shard).collect()
    return frame, metadata


def _class_mask(manifest_metadata: dict[str, str]) -> list[int] | None:
    raw = manifest_metadata.get("class_mask")
    if not raw or raw == "null":
        return None
    return [int(index) for index in json.loads(raw)]


def _prepare_model(model: torch.nn.Module, *, device: torch.device, channels_last: bool) -> torch.nn.Module:
    model = model.eval().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _batches(
    images: ShardImages, *, settings: EvaluationSettings, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    loader = DataLoader(
        images,
        batch_size=settings.batch_size,
        shuffle=False,
        num_workers=settings.workers,
        pin_memory=device.type == "cuda",
        # A few batches in flight at most, whatever the shard size.
        prefetch_factor=2 if settings.workers > 0 else None,
    )
    yield from loader


def _run_model(
    model: torch.nn.Module,
    images: ShardImages,
    labels: torch.Tensor,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    settings: EvaluationSettings,
    class_mask: list[int] | None,
    description: str,
) -> _ShardOutputs:
    outputs = _ShardOutputs()
    mask = torch.tensor(class_mask, dtype=torch.long) if class_mask is not None else None
    progress = tqdm(total=len(images), desc=description, unit="img", file=sys.stderr, mininterval=10, ascii=True)

    with torch.inference_mode(), progress:
        for indices, tensors, errors in _batches(images, settings=settings, device=device):
            ok = torch.tensor([error == "" for error in errors], dtype=torch.bool)
            for index, error in zip(indices.tolist(), errors):
                if error:
                    outputs.errors[index] = error
                    _LOGGER.warning("could not decode %s: %s", images.paths[index], error)
            if ok.any():
                logits = _forward(model, tensors[ok], device=device, amp_dtype=amp_dtype,
                                  channels_last=settings.channels_last)
                _collect(outputs, logits, indices[ok], labels[indices[ok]], mask)
            progress.update(len(errors))
    return outputs


def _forward(
    model: torch.nn.Module,
    batch: torch.Tensor,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
) -> torch.Tensor:
    batch = batch.to(device, non_blocking=True)
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(batch)
    # Softmax in float32 so that AMP runs do not lose resolution in the probabilities.
    return logits.float().cpu()


def _collect(
    outputs: _ShardOutputs,
    logits: torch.Tensor,
    indices: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None,
) -> None:
    if mask is not None:
        # A subset dataset (for example 200 classes) restricts the prediction to
        # its own classes before top-k, and maps positions back to ImageNet ids.
        logits = logits[:, mask]
        label_positions = _positions_in_mask(labels, mask)
    else:
        label_positions = labels

    log_probs = torch.log_softmax(logits, dim=1)
    top_log_probs, top_positions = log_probs.topk(min(TOP_K, logits.shape[1]), dim=1)
    top_classes = mask[top_positions] if mask is not None else top_positions

    outputs.rows.extend(indices.tolist())
    outputs.top5_indices.append(top_classes.to(torch.int32).numpy())
    outputs.top5_probs.append(top_log_probs.exp().numpy().astype(np.float32))
    outputs.true_class_logprob.append(log_probs.gather(1, label_positions[:, None])[:, 0].numpy())


def _positions_in_mask(labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    lookup = torch.full((int(mask.max()) + 1,), -1, dtype=torch.long)
    lookup[mask] = torch.arange(len(mask))
    positions = lookup[labels.clamp(max=len(lookup) - 1)]
    if (positions < 0).any():
        raise ValueError("a label lies outside the dataset's class mask; rebuild the manifest")
    return positions


def _predictions_frame(
    manifest: pl.DataFrame,
    outputs: _ShardOutputs,
    *,
    dataset: str,
    model_name: str,
    checkpoint_sha256: str,
) -> pl.DataFrame:
    size = manifest.height
    top5_indices: list[list[int] | None] = [None] * size
    top5_probs: list[list[float] | None] = [None] * size
    true_logprob: list[float | None] = [None] * size

    if outputs.rows:
        all_indices = np.concatenate(outputs.top5_indices)
        all_probs = np.concatenate(outputs.top5_probs)
        all_logprob = np.concatenate(outputs.true_class_logprob)
        for position, row in enumerate(outputs.rows):
            top5_indices[row] = all_indices[position].tolist()
            top5_probs[row] = all_probs[position].tolist()
            true_logprob[row] = float(all_logprob[position])

    labels = manifest["label"].to_list()
    frame = pl.DataFrame(
        {
            "dataset": [dataset] * size,
            "model": [model_name] * size,
            "image_id": manifest["image_id"],
            "path": manifest["path"],
            "label": manifest["label"],
            "status": ["failed" if row in outputs.errors else "ok" for row in range(size)],
            "error": [outputs.errors.get(row) for row in range(size)],
            "top5_indices": top5_indices,
            "top5_probs": top5_probs,
            "true_class_logprob": true_logprob,
            "correct_top1": [bool(top and top[0] == label) for top, label in zip(top5_indices, labels)],
            "correct_top5": [bool(top and label in top) for top, label in zip(top5_indices, labels)],
            "checkpoint_sha256": [checkpoint_sha256] * size,
        },
        schema=PREDICTION_SCHEMA,
    )
    extra = [column for column in manifest.columns if column == "real_labels"]
    return frame.with_columns(manifest.select(extra)) if extra else frame
