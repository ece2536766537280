"""Reading and writing of converted checkpoints, the timm models they load into, and their provenance records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors
import timm
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from imagebench.checkpoints.heads import attach_head, head_from_metadata, head_metadata, head_of
from imagebench.errors import CheckpointError
from imagebench.io import atomic_path, sha256_file


def load_model(*, checkpoint: Path, architecture: str, pretrained_cfg: str | None = None) -> torch.nn.Module:
    """Build ``architecture`` with timm, load the safetensors ``checkpoint`` strictly and switch to eval mode.

    A checkpoint whose metadata names a head (see ``imagebench.checkpoints.heads``) gets that
    head in place of timm's before loading.

    ``pretrained_cfg`` is a timm pretrained tag of the same architecture, such as
    ``tf_efficientnet_lite0.in1k``. The model is built from that tag, without downloading
    anything, so that ``model.pretrained_cfg`` and ``timm.data.resolve_data_config(model=model)``
    give the tag's preprocessing.
    """
    head = read_head(checkpoint)
    model = build_model(architecture=architecture, pretrained_cfg=pretrained_cfg, head=head)
    name = _model_name(architecture=architecture, pretrained_cfg=pretrained_cfg)

    try:
        state_dict = load_file(Path(checkpoint), device="cpu")
    except (OSError, SafetensorError) as error:
        raise CheckpointError(
            f"checkpoint {checkpoint} cannot be read as safetensors: {error}. Run the conversion step again."
        ) from error

    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        # torch lists the missing and unexpected keys over several lines; one line reads better in a log.
        detail = " ".join(str(error).split()).rstrip(". ")
        raise CheckpointError(
            f"checkpoint {checkpoint} does not fit timm's {name}: {detail}. Convert it again for this architecture."
        ) from error
    return model.eval()


def build_model(
    *, architecture: str, pretrained_cfg: str | None = None, head: dict[str, Any] | None = None
) -> torch.nn.Module:
    """Build ``architecture`` (or its ``pretrained_cfg`` tag) with timm, without weights, and attach ``head``."""
    name = _model_name(architecture=architecture, pretrained_cfg=pretrained_cfg)
    try:
        model = timm.create_model(name, pretrained=False)
    except RuntimeError as error:
        raise CheckpointError(
            f"timm cannot build {name!r}: {error}. Fix the architecture: or pretrained_cfg: value."
        ) from error
    return attach_head(model, head, name=name)


def save_checkpoint(state_dict: dict[str, torch.Tensor], output: Path, *, model: torch.nn.Module) -> dict[str, Any]:
    """Write ``state_dict``, the weights of ``model``, atomically as safetensors and return its provenance entries.

    The head spec of ``model`` (see ``imagebench.checkpoints.heads``) goes into the file's
    metadata. The entries name the file, its sha256 and size, the tensor and parameter counts,
    the head and the library versions.
    """
    head = head_of(model)
    # Cloning gives every tensor its own contiguous storage, which safetensors requires.
    tensors = {key: value.detach().contiguous().clone() for key, value in state_dict.items()}
    output = Path(output)
    with atomic_path(output) as temporary:
        save_file(tensors, str(temporary), metadata={"format": "pt", **head_metadata(head)})

    return {
        "head": head,
        "safetensors_file": output.name,
        "safetensors_sha256": sha256_file(output),
        "safetensors_size_bytes": output.stat().st_size,
        "tensor_count": len(tensors),
        "param_count": sum(parameter.numel() for parameter in model.parameters()),
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "safetensors_version": safetensors.__version__,
    }


def read_head(checkpoint: Path) -> dict[str, Any] | None:
    """Return the head spec recorded in the metadata of the safetensors ``checkpoint``, or None."""
    try:
        with safe_open(str(checkpoint), framework="pt", device="cpu") as handle:
            metadata = handle.metadata()
    except (OSError, SafetensorError) as error:
        raise CheckpointError(
            f"checkpoint {checkpoint} cannot be read as safetensors: {error}. Run the conversion step again."
        ) from error
    return head_from_metadata(metadata, checkpoint=str(checkpoint))


def read_provenance(path: Path) -> dict[str, Any]:
    """Return the provenance record that ``convert_checkpoint`` wrote to ``path``."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise CheckpointError(
            f"provenance file {path} cannot be read: {error}. Run the conversion step again."
        ) from error
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"provenance file {path} is not valid JSON: {error}. Run the conversion step again."
        ) from error
    if not isinstance(record, dict):
        raise CheckpointError(
            f"provenance file {path} contains a {type(record).__name__}, not a JSON object. "
            "Run the conversion step again."
        )
    return record


def _model_name(*, architecture: str, pretrained_cfg: str | None) -> str:
    if pretrained_cfg is None:
        return architecture

    tag_architecture = timm.models.split_model_name_tag(pretrained_cfg)[0]
    if tag_architecture != timm.models.split_model_name_tag(architecture)[0]:
        raise CheckpointError(
            f"pretrained_cfg {pretrained_cfg!r} belongs to architecture {tag_architecture!r}, not {architecture!r}. "
            "Use a tag of the same architecture."
        )
    return pretrained_cfg
