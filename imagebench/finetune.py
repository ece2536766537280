"""Short fine-tunes of a converted checkpoint: the ingredients of a model soup made on one machine.

Each fine-tune starts from the same timm-keyed checkpoint and trains either the classifier
alone or the last block and everything after it, with AdamW, a cosine learning-rate decay
and gradient clipping at norm 1, as model-soups' ``finetune.py`` does for CLIP (without its
warm-up, which a few dozen steps leave no room for). The model
stays in eval mode throughout, so batch-norm statistics and dropout stay as loaded: with a
few hundred images the running statistics would only get worse. Python's and torch's
random generators are seeded from ``seed`` and images are loaded in the main process, so
the same settings on the same machine and thread count give the same weights.

Snakemake imports this module while it parses the workflow, so torch and timm are imported
inside the functions that need them.
"""

from __future__ import annotations

import logging
import math
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagebench.errors import ConfigError
from imagebench.steps import job

if TYPE_CHECKING:
    import torch

_LOGGER = logging.getLogger(__name__)

TRAINABLE = ("classifier", "last_block")
AUGMENTATIONS = ("none", "flip", "random_resized_crop")
GRADIENT_CLIP_NORM = 1.0


@dataclass(frozen=True)
class FinetuneSettings:
    """Hyperparameters of one fine-tune; ``lr`` is the peak AdamW learning rate."""

    lr: float
    epochs: int
    seed: int
    train: str = "classifier"
    augmentation: str = "none"
    batch_size: int = 32
    weight_decay: float = 0.0
    label_smoothing: float = 0.0

    @classmethod
    def from_config(cls, section: dict[str, Any], *, field: str) -> FinetuneSettings:
        """Build settings from a config mapping; raise ConfigError naming ``field`` and the allowed values."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f"{field}: unknown key(s) {unknown}; allowed keys are {', '.join(sorted(known))}")
        missing = [key for key in ("lr", "epochs", "seed") if key not in section]
        if missing:
            raise ConfigError(f"{field}: missing key(s) {missing}; a fine-tune needs lr, epochs and seed")

        settings = cls(**section)
        settings.check(field=field)
        return settings

    def check(self, *, field: str) -> None:
        checks = (
            ("lr", _is_number(self.lr) and self.lr > 0, "a positive number"),
            ("epochs", _is_integer(self.epochs) and self.epochs >= 1, "an integer of at least 1"),
            ("seed", _is_integer(self.seed) and self.seed >= 0, "a non-negative integer"),
            ("train", self.train in TRAINABLE, f"one of {', '.join(TRAINABLE)}"),
            ("augmentation", self.augmentation in AUGMENTATIONS, f"one of {', '.join(AUGMENTATIONS)}"),
            ("batch_size", _is_integer(self.batch_size) and self.batch_size >= 1, "an integer of at least 1"),
            ("weight_decay", _is_number(self.weight_decay) and self.weight_decay >= 0, "a number of at least 0"),
            ("label_smoothing", _is_number(self.label_smoothing) and 0 <= self.label_smoothing < 1, "a number in [0, 1)"),
        )
        for name, valid, allowed in checks:
            if not valid:
                raise ConfigError(f"{field}.{name}: {getattr(self, name)!r} is not allowed; use {allowed}")


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def trainable_names(model: torch.nn.Module, train: str) -> list[str]:
    """Return the parameter names that ``train`` selects: the classifier, or the last block and all after it."""
    names = [name for name, _ in model.named_parameters()]
    if train == "classifier":
        classifier = model.get_classifier()
        selected = {id(parameter) for parameter in classifier.parameters()}
        return [name for name, parameter in model.named_parameters() if id(parameter) in selected]

    blocks = getattr(model, "blocks", None)
    if blocks is None or len(blocks) == 0:
        raise ConfigError(
            f"train: last_block needs a timm model with a 'blocks' attribute, and {type(model).__name__} has none; "
            "use train: classifier"
        )
    first = f"blocks.{len(blocks) - 1}."
    start = next(index for index, name in enumerate(names) if name.startswith(first))
    return names[start:]


def training_transform(data_config: dict[str, Any], augmentation: str):
    """Return the image transform for ``augmentation``, on top of the model's evaluation preprocessing."""
    from timm.data import create_transform
    from torchvision import transforms

    if augmentation not in AUGMENTATIONS:
        raise ConfigError(f"augmentation {augmentation!r} is not allowed; use one of {', '.join(AUGMENTATIONS)}")
    evaluation = create_transform(**data_config, is_training=False)
    if augmentation == "none":
        return evaluation
    if augmentation == "flip":
        return transforms.Compose([transforms.RandomHorizontalFlip(p=0.5), evaluation])

    # timm's training transform without colour jitter, at the evaluation resolution.
    return create_transform(
        input_size=data_config["input_size"],
        is_training=True,
        hflip=0.5,
        color_jitter=0.0,
        interpolation=data_config["interpolation"],
        mean=data_config["mean"],
        std=data_config["std"],
    )


class TrainingImages:
    """Images of a split manifest with their labels; an image that cannot be decoded is returned as ``None``."""

    def __init__(self, *, root: Path, paths: list[str], labels: list[int], transform) -> None:
        self.root = root
        self.paths = paths
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from imagebench.images import decode_rgb

        decoded = decode_rgb(self.root / self.paths[index])
        if decoded.error is not None:
            _LOGGER.warning("skipping %s in fine-tuning: %s", self.paths[index], decoded.error)
            return None
        return self.transform(decoded.image), self.labels[index]


def finetune_model(
    *,
    model: torch.nn.Module,
    images: TrainingImages,
    settings: FinetuneSettings,
) -> list[dict[str, Any]]:
    """Fine-tune ``model`` in place on ``images`` and return one record per epoch (loss, train top-1, lr)."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    random.seed(settings.seed)
    torch.manual_seed(settings.seed)

    selected = set(trainable_names(model, settings.train))
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in selected)
    parameters = [parameter for name, parameter in model.named_parameters() if name in selected]
    model.eval()

    loader = DataLoader(
        images, batch_size=settings.batch_size, shuffle=True, num_workers=0,
        generator=torch.Generator().manual_seed(settings.seed), collate_fn=_collate_decoded,
    )  # fmt: skip
    total_steps = settings.epochs * len(loader)
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    )
    loss_function = torch.nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)

    history = []
    for epoch in range(settings.epochs):
        totals = {"loss": 0.0, "correct": 0, "images": 0, "skipped": 0}
        progress = tqdm(loader, desc=f"fine-tune epoch {epoch + 1}/{settings.epochs}", file=sys.stderr,
                        mininterval=10, ascii=True)  # fmt: skip
        for batch, labels, skipped in progress:
            totals["skipped"] += skipped
            if batch is None:
                continue
            optimizer.zero_grad(set_to_none=True)
            logits = model(batch)
            loss = loss_function(logits, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, GRADIENT_CLIP_NORM)
            optimizer.step()
            scheduler.step()

            totals["loss"] += float(loss.detach()) * len(labels)
            totals["correct"] += int((logits.argmax(dim=1) == labels).sum())
            totals["images"] += len(labels)

        record = _epoch_record(epoch, totals, lr=scheduler.get_last_lr()[0])
        _LOGGER.info("epoch %d: loss %.4f, train top-1 %.2f%% on %d images", epoch + 1, record["loss"],
                     record["train_top1"], record["images"])  # fmt: skip
        history.append(record)

    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return history


def _collate_decoded(items: list):
    import torch

    kept = [item for item in items if item is not None]
    skipped = len(items) - len(kept)
    if not kept:
        return None, None, skipped
    return torch.stack([tensor for tensor, _ in kept]), torch.tensor([label for _, label in kept]), skipped


def _epoch_record(epoch: int, totals: dict[str, float], *, lr: float) -> dict[str, Any]:
    images = int(totals["images"])
    return {
        "epoch": epoch + 1,
        "images": images,
        "skipped_images": int(totals["skipped"]),
        "loss": round(totals["loss"] / images, 6) if images else None,
        "train_top1": round(100.0 * totals["correct"] / images, 3) if images else None,
        "lr_at_end": lr,
    }


def finetune_checkpoint(
    *,
    name: str,
    base_model: str,
    base_checkpoint: Path,
    base_provenance: dict[str, Any],
    architecture: str,
    pretrained_cfg: str | None,
    preprocessing: dict[str, Any] | None,
    split_manifest: Path,
    dataset_root: Path,
    settings: FinetuneSettings,
    threads: int,
    output: Path,
    provenance_output: Path,
) -> dict[str, Any]:
    """Fine-tune ``base_checkpoint`` on the images of ``split_manifest`` and write safetensors plus provenance.

    Returns the provenance record, which has the settings, the split's sha256, the loss and
    train top-1 of every epoch, and the sha256 of both checkpoints.
    """
    import torch

    from imagebench.checkpoints.load import load_model, save_checkpoint
    from imagebench.datasets.manifest import read_manifest
    from imagebench.io import sha256_file, write_json_atomic
    from imagebench.preprocess import describe_preprocessing, resolve_preprocessing

    torch.set_num_threads(threads)
    model = load_model(checkpoint=base_checkpoint, architecture=architecture, pretrained_cfg=pretrained_cfg)
    data_config = resolve_preprocessing(model, preprocessing)
    manifest, _ = read_manifest(split_manifest)
    images = TrainingImages(
        root=Path(dataset_root),
        paths=manifest["path"].to_list(),
        labels=manifest["label"].to_list(),
        transform=training_transform(data_config, settings.augmentation),
    )
    _LOGGER.info("fine-tuning %s from %s on %d images: %s", name, base_model, len(images), asdict(settings))

    history = finetune_model(model=model, images=images, settings=settings)
    trained = trainable_names(model, settings.train)

    written = save_checkpoint(model.state_dict(), output, model=model)

    record = {
        "model": name,
        "architecture": architecture,
        "weights_format": "timm",
        "source": {"finetune_of": base_model},
        "raw_sha256": None,
        "finetune": asdict(settings),
        "trainable_tensors": trained,
        "trainable_params": sum(parameter.numel() for key, parameter in model.named_parameters() if key in trained),
        "base_model": base_model,
        "base_safetensors_sha256": base_provenance.get("safetensors_sha256"),
        "split": {"manifest": str(split_manifest), "manifest_sha256": sha256_file(split_manifest), "images": len(images)},
        "preprocessing": describe_preprocessing(data_config),
        "history": history,
        **written,
        "torch_threads": threads,
    }
    write_json_atomic(provenance_output, record)
    _LOGGER.info("wrote fine-tuned %s to %s", name, output)
    return record


@job
def finetune_step(snakemake: Any) -> None:
    """Job of rule finetune_ingredient."""
    import json

    params = snakemake.params
    finetune_checkpoint(
        name=params.member,
        base_model=params.base_model,
        base_checkpoint=Path(snakemake.input.checkpoint),
        base_provenance=json.loads(Path(snakemake.input.provenance).read_text(encoding="utf-8")),
        architecture=params.architecture,
        pretrained_cfg=params.pretrained_cfg,
        preprocessing=params.preprocessing,
        split_manifest=Path(snakemake.input.split),
        dataset_root=Path(params.root),
        settings=FinetuneSettings.from_config(dict(params.settings), field=params.field),
        threads=snakemake.threads,
        output=Path(snakemake.output.checkpoint),
        provenance_output=Path(snakemake.output.provenance),
    )
