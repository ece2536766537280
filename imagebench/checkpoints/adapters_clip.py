"""Adapter from OpenAI CLIP image-tower keys to timm's CLIP VisionTransformer keys.

It reads the state dicts of ``clip.load("ViT-B/32")`` models, bare (``visual.conv1.weight``)
or nested under a prefix such as ``model.`` or ``module.``. It also reads the model-soups
ingredients, which wrap the CLIP model as ``model.*`` and add a ``classification_head`` (a
Linear layer on the L2-normalised 512-d image embedding). Text-tower keys are dropped.

The renames are those of timm 1.0's private ``_convert_openai_clip`` in
``timm/models/vision_transformer.py``; the tests check that both give the same tensors. timm's
public entry point, ``checkpoint_filter_fn(state_dict, model)``, needs a built model and
resamples position embeddings, while an adapter receives only the reference state dict and
must reject, not resample, a tensor of the wrong shape.
"""

from __future__ import annotations

from torch import Tensor

from imagebench.checkpoints.heads import normalized_embedding_spec
from imagebench.errors import CheckpointError

# The key that marks a CLIP image tower; its prefix is the prefix of every image-tower key.
_CLASS_EMBEDDING = "visual.class_embedding"
_HEAD_WEIGHT = "classification_head.weight"
_HEAD_BIAS = "classification_head.bias"

# Substring renames applied in this order to every image-tower key, as timm 1.0 does.
_RENAMES = (
    ("conv1", "patch_embed.proj"),
    ("positional_embedding", "pos_embed"),
    ("transformer.resblocks.", "blocks."),
    ("ln_pre", "norm_pre"),
    ("ln_post", "norm"),
    ("ln_", "norm"),
    ("in_proj_", "qkv."),
    ("out_proj", "proj"),
    ("mlp.c_fc", "mlp.fc1"),
    ("mlp.c_proj", "mlp.fc2"),
)


def adapt_openai_clip(source: dict[str, Tensor], reference: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename an OpenAI CLIP image tower (optionally with a model-soups classification head) to timm's keys.

    Without a classification head, the 768x512 image projection ``visual.proj`` becomes timm's
    ``head`` with a zero bias, so the model outputs the 512-d CLIP embedding (num_classes=512).
    With one (``classification_head.weight`` C x 512 and its bias), the reference must have the
    ``NormalizedEmbeddingHead`` that ``openai_clip_head`` asks for: the projection becomes
    ``head.projection`` and the classification head ``head.classifier``, so the model computes
    the model-soups logits ``W (z / |z|) + b`` exactly. Every tensor is renamed, reshaped or
    transposed, never combined with another, so averaging converted ingredients equals
    converting averaged ones.
    """
    prefix = _image_tower_prefix(source)
    adapted: dict[str, Tensor] = {}
    projection: Tensor | None = None
    for key, tensor in source.items():
        if not key.startswith(prefix + "visual."):
            continue
        name = _rename(key[len(prefix + "visual.") :])
        if name == "proj":
            projection = tensor
            continue
        adapted[name] = _reshape(name, tensor)

    if projection is None:
        raise CheckpointError(
            f"openai_clip adapter: the source has no {prefix}visual.proj, the image projection of a CLIP "
            "ViT. The checkpoint is not a CLIP ViT image tower; check the weights format."
        )
    adapted.update(_head(source, projection=projection))
    _check_against(adapted, reference)
    return adapted


def openai_clip_head(source: dict[str, Tensor]) -> dict | None:
    """Return the head spec a model-soups ingredient needs (a normalised-embedding head), or None for bare CLIP."""
    classification = _classification_head(source)
    if classification is None:
        return None
    weight, _ = classification
    return normalized_embedding_spec(embed_dim=weight.shape[1], num_classes=weight.shape[0])


def _image_tower_prefix(source: dict[str, Tensor]) -> str:
    markers = [key for key in source if key.endswith(_CLASS_EMBEDDING)]
    if len(markers) != 1:
        found = ", ".join(markers) if markers else "none"
        raise CheckpointError(
            f"openai_clip adapter: expected exactly one key ending in {_CLASS_EMBEDDING!r}, found {found}. "
            "The checkpoint is not a single OpenAI CLIP model; check the weights format."
        )
    return markers[0][: -len(_CLASS_EMBEDDING)]


def _rename(name: str) -> str:
    for old, new in _RENAMES:
        name = name.replace(old, new)
    if name == "class_embedding":
        return "cls_token"
    return name


def _reshape(name: str, tensor: Tensor) -> Tensor:
    # CLIP stores the class token as (D,) and the position embedding as (N, D); timm adds batch axes.
    if name == "cls_token":
        return tensor.reshape(1, 1, -1)
    if name == "pos_embed":
        return tensor.unsqueeze(0)
    return tensor


def _head(source: dict[str, Tensor], *, projection: Tensor) -> dict[str, Tensor]:
    classification = _classification_head(source)
    if classification is None:
        return {"head.weight": projection.t().contiguous(), "head.bias": projection.new_zeros(projection.shape[1])}

    weight, bias = classification
    if weight.shape[1] != projection.shape[1]:
        raise CheckpointError(
            f"openai_clip adapter: the classification head has shape {tuple(weight.shape)}, but the image "
            f"projection visual.proj has shape {tuple(projection.shape)}; the head must be "
            f"(classes, {projection.shape[1]})."
        )
    return {
        "head.projection.weight": projection.t().contiguous(),
        "head.classifier.weight": weight,
        "head.classifier.bias": bias,
    }


def _classification_head(source: dict[str, Tensor]) -> tuple[Tensor, Tensor] | None:
    """Return the model-soups classification head (weight, bias) of ``source``, or None when it has none."""
    head_keys = [key for key in source if key.endswith(_HEAD_WEIGHT)]
    if not head_keys:
        return None
    if len(head_keys) > 1:
        raise CheckpointError(
            f"openai_clip adapter: the source has {len(head_keys)} classification heads ({', '.join(head_keys)}); "
            "expected at most one."
        )

    weight_key = head_keys[0]
    weight = source[weight_key]
    if weight.ndim != 2:
        raise CheckpointError(
            f"openai_clip adapter: {weight_key} has shape {tuple(weight.shape)}; a classification head is "
            "a matrix (classes, embedding)."
        )
    bias = source.get(weight_key[: -len(_HEAD_WEIGHT)] + _HEAD_BIAS)
    if bias is None:
        bias = weight.new_zeros(weight.shape[0])
    return weight, bias


def _check_against(adapted: dict[str, Tensor], reference: dict[str, Tensor]) -> None:
    missing = sorted(set(reference) - set(adapted))
    unexpected = sorted(set(adapted) - set(reference))
    if missing or unexpected:
        raise CheckpointError(
            "openai_clip adapter: the renamed keys do not match the timm model: "
            f"missing {missing[:5] or 'none'}, unexpected {unexpected[:5] or 'none'}. "
            "The timm architecture has another depth or layout than the CLIP checkpoint; fix the architecture: value."
        )
    for key, tensor in adapted.items():
        if tuple(tensor.shape) != tuple(reference[key].shape):
            raise CheckpointError(
                f"openai_clip adapter: {key} has shape {tuple(tensor.shape)} but the timm model expects "
                f"{tuple(reference[key].shape)}. Check the architecture: value (patch size, width, "
                "number of classes) against the checkpoint."
            )
