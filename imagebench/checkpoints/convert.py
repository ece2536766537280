"""Conversion of a raw weights file into a timm-keyed safetensors checkpoint with a provenance record."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import timm
import torch
from torch import Tensor

from imagebench.checkpoints.adapters import ADAPTERS, head_spec
from imagebench.checkpoints.heads import attach_head
from imagebench.checkpoints.load import save_checkpoint
from imagebench.checkpoints.state_dict import read_state_dict
from imagebench.errors import CheckpointError
from imagebench.io import sha256_file, write_json_atomic

logger = logging.getLogger(__name__)

# Mismatches listed in full in an error message; the rest are counted.
_LISTED_MISMATCHES = 8


def convert_checkpoint(
    *,
    model: str,
    raw_path: Path,
    architecture: str,
    weights_format: str,
    output: Path,
    provenance: dict[str, Any],
    provenance_output: Path,
) -> dict[str, Any]:
    """Convert the raw weights at ``raw_path`` into a safetensors file that ``architecture`` loads strictly.

    The raw file is read without running pickled code, its keys are mapped by the adapter named
    ``weights_format``, and every key and shape is checked against
    ``timm.create_model(architecture).state_dict()``. ``output`` and ``provenance_output`` (JSON)
    are written atomically. ``provenance`` is the record that ``fetch_weights`` returned. The
    provenance record has no timestamps, so a rerun on the same inputs writes identical bytes.
    Returns the provenance record.
    """
    adapter = ADAPTERS.get(weights_format)
    if adapter is None:
        raise CheckpointError(
            f"model '{model}': weights format '{weights_format}' is invalid; allowed values: {', '.join(ADAPTERS)}."
        )

    raw_path, output = Path(raw_path), Path(output)
    raw_sha256 = _check_raw_sha256(model=model, raw_path=raw_path, provenance=provenance)
    source_state_dict = read_state_dict(model=model, path=raw_path)

    # A format may need a head that timm lacks, so the checkpoint's metadata records it for load_model.
    head = head_spec(weights_format, source_state_dict)
    reference_model = _reference_model(model=model, architecture=architecture, head=head)
    reference = reference_model.state_dict()
    try:
        adapted = adapter(source_state_dict, reference)
    except CheckpointError as error:
        raise CheckpointError(f"model '{model}' ({raw_path}): {error}") from error
    check_against_reference(
        model=model, architecture=architecture, state_dict=adapted, reference=reference, path=raw_path
    )

    written = save_checkpoint(adapted, output, model=reference_model)

    record = {
        "model": model,
        "architecture": architecture,
        "weights_format": weights_format,
        "source": provenance.get("source"),
        "fetch": provenance,
        "raw_sha256": raw_sha256,
        "raw_size_bytes": raw_path.stat().st_size,
        **written,
    }
    write_json_atomic(provenance_output, record)
    logger.info("converted weights of %s to %s (%d tensors)", model, output, written["tensor_count"])
    return record


def check_against_reference(
    *,
    model: str,
    architecture: str,
    state_dict: dict[str, Tensor],
    reference: dict[str, Tensor],
    path: Path | None = None,
) -> None:
    """Raise ``CheckpointError`` naming the missing keys, unexpected keys and wrong shapes of ``state_dict``."""
    missing = [key for key in reference if key not in state_dict]
    unexpected = [key for key in state_dict if key not in reference]
    wrong_shapes = [
        f"{key}: {tuple(state_dict[key].shape)} instead of {tuple(reference[key].shape)}"
        for key in reference
        if key in state_dict and state_dict[key].shape != reference[key].shape
    ]
    if not (missing or unexpected or wrong_shapes):
        return

    problems = [
        _describe(label, items)
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong_shapes))
        if items
    ]
    raise CheckpointError(
        f"model '{model}': the converted state dict{f' of {path}' if path is not None else ''} "
        f"does not match timm's {architecture}: "
        + "; ".join(problems)
        + ". Check the model's architecture: value and the format: of its weights."
    )


def _check_raw_sha256(*, model: str, raw_path: Path, provenance: dict[str, Any]) -> str:
    """Return the sha256 of the raw file after checking that it is still the file that was fetched."""
    try:
        actual = sha256_file(raw_path)
    except OSError as error:
        raise CheckpointError(f"model '{model}': cannot read raw weights file {raw_path}: {error}.") from error

    fetched = provenance.get("sha256")
    if fetched is not None and fetched != actual:
        raise CheckpointError(
            f"model '{model}': raw weights file {raw_path} has sha256 {actual}, but it was fetched with "
            f"sha256 {fetched}; it changed after the fetch. Delete it and fetch it again."
        )
    return actual


def _reference_model(*, model: str, architecture: str, head: dict[str, Any] | None) -> torch.nn.Module:
    """Build ``architecture`` with ``head`` and uninitialised weights, because only its keys, shapes and sizes are read."""
    if not timm.is_model(architecture):
        raise CheckpointError(
            f"model '{model}': timm has no architecture {architecture!r}; "
            "list valid names with timm.list_models() and fix the architecture: value."
        )
    try:
        with torch.device("meta"):
            return attach_head(timm.create_model(architecture, pretrained=False), head, name=architecture)
    except (NotImplementedError, RuntimeError) as error:
        # Some architectures compute values at build time, which meta tensors cannot hold.
        logger.debug("timm cannot build %s on the meta device (%s); building it on the CPU", architecture, error)
    try:
        return attach_head(timm.create_model(architecture, pretrained=False), head, name=architecture)
    except RuntimeError as error:
        raise CheckpointError(
            f"model '{model}': timm cannot build {architecture!r}: {error}. Fix the architecture: value."
        ) from error


def _describe(label: str, items: list[str]) -> str:
    listed = ", ".join(items[:_LISTED_MISMATCHES])
    rest = len(items) - _LISTED_MISMATCHES
    return f"{len(items)} {label} ({listed}{f', and {rest} more' if rest > 0 else ''})"
