"""Adapters that rename the keys of a foreign state dict to timm's.

Each adapter takes the source state dict and the state dict of the timm reference model (used for
its keys and shapes only) and returns the source tensors under timm's keys. ``convert`` checks the
result against the reference again, so an adapter only has to be right about names.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import Tensor

from imagebench.checkpoints.adapters_clip import adapt_openai_clip, openai_clip_head
from imagebench.errors import CheckpointError

Adapter = Callable[[dict[str, Tensor], dict[str, Tensor]], dict[str, Tensor]]
HeadSpecReader = Callable[[dict[str, Tensor]], "dict | None"]

_NUM_BATCHES_TRACKED = "num_batches_tracked"

# efficientnet_pytorch module names outside the blocks, mapped to timm's EfficientNet names.
_TOP_LEVEL_NAMES = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}

# Layer names inside an efficientnet_pytorch MBConvBlock, mapped to timm's InvertedResidual
# (blocks with an expansion convolution) and DepthwiseSeparableConv (blocks without one).
_INVERTED_RESIDUAL_NAMES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_DEPTHWISE_SEPARABLE_NAMES = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}

_SOURCE_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.([A-Za-z0-9_]+)\.(.+)$")
_TIMM_BLOCK_KEY = re.compile(r"^(blocks\.\d+\.\d+)\.")


def adapt_timm(source: dict[str, Tensor], reference: dict[str, Tensor]) -> dict[str, Tensor]:
    """Return ``source`` unchanged: its keys are already timm's."""
    return dict(source)


def adapt_efficientnet_pytorch(source: dict[str, Tensor], reference: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename an efficientnet_pytorch state dict (``_conv_stem``, ``_blocks.N``, ``_fc``) to timm's keys.

    Written for timm's ``tf_efficientnet_lite0/1/2``. The tests compare lite0's logits with the
    original implementation. The tensors other than ``num_batches_tracked`` are paired with the
    reference's in order. Each pair must have the same shape, and the source key renamed by the
    name map must equal the reference key. So a reordered or foreign state dict is rejected, and
    so is a source saved with sorted keys.
    ``num_batches_tracked`` is renamed where present and set to 0 where missing, because timm
    loads strictly and evaluation does not read it.
    """
    source_keys = [key for key in source if not key.endswith(_NUM_BATCHES_TRACKED)]
    reference_keys = [key for key in reference if not key.endswith(_NUM_BATCHES_TRACKED)]
    if len(source_keys) != len(reference_keys):
        raise CheckpointError(
            f"efficientnet_pytorch adapter: the source has {len(source_keys)} tensors besides "
            f"num_batches_tracked but the timm model has {len(reference_keys)}; "
            "the checkpoint is for another architecture. Fix the model's architecture: value."
        )

    timm_blocks = _timm_block_prefixes(reference_keys)
    expanded_blocks = _expanded_source_blocks(source_keys)
    adapted: dict[str, Tensor] = {}
    for position, (source_key, reference_key) in enumerate(zip(source_keys, reference_keys, strict=True)):
        renamed = _rename(source_key, timm_blocks=timm_blocks, expanded_blocks=expanded_blocks)
        if renamed != reference_key:
            raise CheckpointError(
                f"efficientnet_pytorch adapter: tensor {position} is {source_key!r}, which maps to {renamed!r}, "
                f"but the timm model has {reference_key!r} there. The checkpoint's keys are in another order "
                "or belong to another architecture."
            )
        source_shape, reference_shape = tuple(source[source_key].shape), tuple(reference[reference_key].shape)
        if source_shape != reference_shape:
            raise CheckpointError(
                f"efficientnet_pytorch adapter: tensor {position} {source_key!r} has shape {source_shape} but "
                f"the timm model's {reference_key!r} has shape {reference_shape}. Fix the model's architecture: value."
            )
        adapted[reference_key] = source[source_key]

    _add_num_batches_tracked(
        adapted, source=source, reference=reference, timm_blocks=timm_blocks, expanded_blocks=expanded_blocks
    )
    return adapted


ADAPTERS: dict[str, Adapter] = {
    "timm": adapt_timm,
    "efficientnet_pytorch": adapt_efficientnet_pytorch,
    "openai_clip": adapt_openai_clip,
}

# Readers of the head spec (imagebench.checkpoints.heads) for formats whose checkpoints may need
# a head that timm lacks. A reader returns None where timm's own head fits.
HEAD_SPEC_READERS: dict[str, HeadSpecReader] = {
    "openai_clip": openai_clip_head,
}


def head_spec(weights_format: str, source: dict[str, Tensor]) -> dict | None:
    """Return the head spec that a state dict of ``weights_format`` needs, or None for timm's own head."""
    reader = HEAD_SPEC_READERS.get(weights_format)
    return reader(source) if reader is not None else None


def _timm_block_prefixes(reference_keys: list[str]) -> list[str]:
    """Return timm's block prefixes (``blocks.<stage>.<index>``) in model order."""
    prefixes: list[str] = []
    for key in reference_keys:
        match = _TIMM_BLOCK_KEY.match(key)
        if match and (not prefixes or prefixes[-1] != match.group(1)):
            prefixes.append(match.group(1))
    return prefixes


def _expanded_source_blocks(source_keys: list[str]) -> set[int]:
    expanded = set()
    for key in source_keys:
        match = _SOURCE_BLOCK_KEY.match(key)
        if match and match.group(2) == "_expand_conv":
            expanded.add(int(match.group(1)))
    return expanded


def _rename(source_key: str, *, timm_blocks: list[str], expanded_blocks: set[int]) -> str:
    """Return the timm key for an efficientnet_pytorch key, or the source key itself when it has no counterpart."""
    match = _SOURCE_BLOCK_KEY.match(source_key)
    if match:
        block_index, layer, parameter = int(match.group(1)), match.group(2), match.group(3)
        if block_index >= len(timm_blocks):
            return source_key
        names = _INVERTED_RESIDUAL_NAMES if block_index in expanded_blocks else _DEPTHWISE_SEPARABLE_NAMES
        if layer not in names:
            return source_key
        return f"{timm_blocks[block_index]}.{names[layer]}.{parameter}"

    layer, _, parameter = source_key.partition(".")
    if layer in _TOP_LEVEL_NAMES and parameter:
        return f"{_TOP_LEVEL_NAMES[layer]}.{parameter}"
    return source_key


def _add_num_batches_tracked(
    adapted: dict[str, Tensor],
    *,
    source: dict[str, Tensor],
    reference: dict[str, Tensor],
    timm_blocks: list[str],
    expanded_blocks: set[int],
) -> None:
    for source_key in source:
        if not source_key.endswith(_NUM_BATCHES_TRACKED):
            continue
        renamed = _rename(source_key, timm_blocks=timm_blocks, expanded_blocks=expanded_blocks)
        if renamed not in reference:
            raise CheckpointError(
                f"efficientnet_pytorch adapter: {source_key!r} maps to {renamed!r}, which the timm model does not "
                "have. The checkpoint belongs to another architecture."
            )
        adapted[renamed] = source[source_key]

    for reference_key, reference_tensor in reference.items():
        if reference_key.endswith(_NUM_BATCHES_TRACKED) and reference_key not in adapted:
            adapted[reference_key] = reference_tensor.new_zeros((), device="cpu")
