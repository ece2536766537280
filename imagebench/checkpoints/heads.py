"""Classifier heads that timm has no layer for, and how a checkpoint records which one it needs.

A converted checkpoint normally loads into ``timm.create_model(architecture)`` as is. Some
released weights have a head that no timm layer computes. The model-soups CLIP ingredients
project the image features to the 512-d CLIP embedding, divide it by its L2 norm, and only then
apply a 1000-way linear layer. Such a checkpoint stores a head spec, a small JSON object, in its
safetensors metadata under ``HEAD_METADATA_KEY``. The code that builds models from checkpoints
replaces timm's head with the module that the spec names.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from imagebench.errors import CheckpointError

HEAD_METADATA_KEY = "imagebench.head"
NORMALIZED_EMBEDDING = "normalized_embedding"


class NormalizedEmbeddingHead(nn.Module):
    """Project features to an embedding, divide it by its L2 norm, then apply a linear classifier.

    This is the forward pass of the model-soups ``ModelWrapper`` on top of CLIP's image
    encoder: ``logits = W (z / |z|) + b`` with ``z = proj^T x``. The projection has no bias,
    as CLIP's ``visual.proj`` has none.
    """

    def __init__(self, *, in_features: int, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.projection = nn.Linear(in_features, embed_dim, bias=False)
        self.classifier = nn.Linear(embed_dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        embedding = self.projection(features)
        return self.classifier(embedding / embedding.norm(dim=-1, keepdim=True))


def normalized_embedding_spec(*, embed_dim: int, num_classes: int) -> dict[str, Any]:
    """Return the head spec of a ``NormalizedEmbeddingHead`` with these sizes."""
    return {"type": NORMALIZED_EMBEDDING, "embed_dim": int(embed_dim), "num_classes": int(num_classes)}


def attach_head(model: nn.Module, head: dict[str, Any] | None, *, name: str) -> nn.Module:
    """Replace the linear ``model.head`` of a timm model by the head that ``head`` specifies; None keeps timm's."""
    if head is None:
        return model
    if head.get("type") != NORMALIZED_EMBEDDING:
        raise CheckpointError(
            f"head spec {head!r} has an invalid type; the supported type is {NORMALIZED_EMBEDDING!r}. "
            "Convert the checkpoint again with this version of imagebench."
        )

    current = getattr(model, "head", None)
    if not isinstance(current, nn.Linear):
        raise CheckpointError(
            f"timm's {name} has no linear `head` layer to replace with a {NORMALIZED_EMBEDDING} head. "
            "This head fits ViT-style models only. Fix the architecture: value."
        )
    model.head = NormalizedEmbeddingHead(
        in_features=current.in_features, embed_dim=head["embed_dim"], num_classes=head["num_classes"]
    ).to(device=current.weight.device, dtype=current.weight.dtype)
    model.num_classes = head["num_classes"]
    return model


def head_of(model: nn.Module) -> dict[str, Any] | None:
    """Return the head spec of a model built by ``attach_head``, or None for a model with timm's own head."""
    head = getattr(model, "head", None)
    if not isinstance(head, NormalizedEmbeddingHead):
        return None
    return normalized_embedding_spec(
        embed_dim=head.projection.out_features, num_classes=head.classifier.out_features
    )


def head_metadata(head: dict[str, Any] | None) -> dict[str, str]:
    """Return the safetensors metadata entries that record ``head``, or none for timm's own head."""
    if head is None:
        return {}
    return {HEAD_METADATA_KEY: json.dumps(head, sort_keys=True)}


def head_from_metadata(metadata: dict[str, str] | None, *, checkpoint: str) -> dict[str, Any] | None:
    """Return the head spec stored in a checkpoint's safetensors metadata, or None when it has none."""
    text = (metadata or {}).get(HEAD_METADATA_KEY)
    if text is None:
        return None
    try:
        head = json.loads(text)
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"checkpoint {checkpoint}: metadata {HEAD_METADATA_KEY} is not valid JSON ({error}). "
            "Run the conversion step again."
        ) from error
    if not isinstance(head, dict):
        raise CheckpointError(
            f"checkpoint {checkpoint}: metadata {HEAD_METADATA_KEY} is {text!r}, not a JSON object. "
            "Run the conversion step again."
        )
    return head
