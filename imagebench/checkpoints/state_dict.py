"""Reading of raw checkpoint files into a plain tensor state dict, without running pickled code."""

from __future__ import annotations

import logging
import pickle
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from imagebench.errors import CheckpointError

logger = logging.getLogger(__name__)

# Keys under which training scripts commonly nest the model's state dict, in order of preference.
CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "module")

_ZIP_MAGIC = b"PK\x03\x04"
# torch.save's legacy format starts with the pickled magic number 0x1950a86a20f9469cfc6c (protocol 2).
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
# Pickle protocols 2 and later start with the PROTO opcode.
_PICKLE_PROTOCOL_OPCODE = b"\x80"


# A weights: file: source is copied, not downloaded, so fetching it again copies the same damage.
_REFETCH = (
    "Fetch it again (delete the file and rerun); for a weights: file: source, replace that file first."
)

def read_state_dict(*, model: str, path: Path) -> dict[str, Tensor]:
    """Load the raw weights file ``path`` as a ``{key: tensor}`` dict on the CPU.

    safetensors files are read with the safetensors library, which validates the header against
    the file size. torch.save files (zip or legacy format) are read with
    ``torch.load(weights_only=True)``, whose unpickler rejects any global outside torch's
    allowlist, so no code in the file runs. Any other content, such as a bare pickle, is rejected
    before it is unpickled. A state dict nested under one of ``CONTAINER_KEYS`` is unwrapped.
    """
    path = Path(path)
    kind = _file_kind(model=model, path=path)
    if kind == "safetensors":
        content: Any = _load_safetensors(model=model, path=path)
    else:
        content = _load_torch(model=model, path=path)

    state_dict = _unwrap(content)
    _check_plain_tensors(model=model, path=path, state_dict=state_dict)
    return dict(state_dict)


def _file_kind(*, model: str, path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
        size = path.stat().st_size
    except OSError as error:
        raise CheckpointError(f"model '{model}': cannot read weights file {path}: {error}.") from error

    if head.startswith(_ZIP_MAGIC) or head.startswith(_LEGACY_TORCH_MAGIC):
        return "torch"
    if head.startswith(_PICKLE_PROTOCOL_OPCODE):
        raise CheckpointError(
            f"model '{model}': weights file {path} is not a plain tensor state dict; refusing to unpickle code "
            "from it, because it is a bare pickle rather than a safetensors or torch.save file. Use one of those."
        )
    if len(head) >= 9 and head[8:9] == b"{":
        (header_size,) = struct.unpack("<Q", head[:8])
        if header_size <= size - 8:
            return "safetensors"
        raise CheckpointError(
            f"model '{model}': weights file {path} has a safetensors header of {header_size} bytes "
            f"but the file has only {size} bytes; the file is truncated or damaged. {_REFETCH}"
        )
    raise CheckpointError(
        f"model '{model}': weights file {path} is neither a safetensors file nor a torch.save file "
        f"(it starts with {head[:8]!r}, {size} bytes in all). Check that the source points at the weights file."
    )


def _load_safetensors(*, model: str, path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except SafetensorError as error:
        raise CheckpointError(
            f"model '{model}': safetensors file {path} is invalid: {error}. "
            f"Its header does not match its content, so the file is truncated or damaged. {_REFETCH}"
        ) from error


def _load_torch(*, model: str, path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"model '{model}': weights file {path} is not a plain tensor state dict; refusing to unpickle code "
            f"that it references ({_unpickling_reason(error)}). Use a checkpoint that contains tensors only."
        ) from error
    # torch.load raises RuntimeError, OSError, EOFError or KeyError for a damaged file depending on
    # where the damage is, so every other exception here means the same thing.
    except Exception as error:
        raise CheckpointError(
            f"model '{model}': weights file {path} cannot be read as a torch.save file "
            f"({type(error).__name__}: {error}); it is truncated or damaged. {_REFETCH}"
        ) from error


def _unpickling_reason(error: pickle.UnpicklingError) -> str:
    """Return the line of torch's weights-only message that names the rejected global."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line:
            return line
    return lines[0] if lines else type(error).__name__


def _unwrap(content: Any) -> Any:
    """Return the state dict nested under a container key, or ``content`` when it has no such key."""
    if not isinstance(content, Mapping) or _is_tensor_mapping(content):
        return content
    for key in CONTAINER_KEYS:
        nested = content.get(key)
        if isinstance(nested, Mapping) and _is_tensor_mapping(nested):
            logger.info("using the state dict under the checkpoint key %r", key)
            return nested
    return content


def _is_tensor_mapping(content: Mapping[Any, Any]) -> bool:
    return bool(content) and all(isinstance(value, Tensor) for value in content.values())


def _check_plain_tensors(*, model: str, path: Path, state_dict: Any) -> None:
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise CheckpointError(
            f"model '{model}': weights file {path} contains a {type(state_dict).__name__}, not a non-empty mapping "
            "of names to tensors; it is not a plain tensor state dict."
        )
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise CheckpointError(
                f"model '{model}': weights file {path} has the non-string key {key!r}; "
                "it is not a plain tensor state dict."
            )
        if not isinstance(value, Tensor) or value.layout != torch.strided:
            raise CheckpointError(
                f"model '{model}': weights file {path} has {type(value).__name__} {_short(value)} under {key!r}; "
                "it is not a plain tensor state dict (one nested under "
                f"{', '.join(CONTAINER_KEYS)} is unwrapped)."
            )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
