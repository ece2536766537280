from __future__ import annotations

from pathlib import Path

import pytest
import timm
import timm.data
import torch
from helpers_checkpoints import lite0_converted
from safetensors.torch import load_file, save_file

from imagebench.checkpoints.load import load_model, read_provenance
from imagebench.errors import CheckpointError


def test_load_lite0_with_pretrained_cfg(tmp_path_factory: pytest.TempPathFactory) -> None:
    checkpoint, _ = lite0_converted(tmp_path_factory)

    model = load_model(
        checkpoint=checkpoint, architecture="tf_efficientnet_lite0", pretrained_cfg="tf_efficientnet_lite0.in1k"
    )

    assert not model.training
    assert model.pretrained_cfg["tag"] == "in1k"
    assert model.pretrained_cfg["hf_hub_id"] == "timm/tf_efficientnet_lite0.in1k"
    data_config = timm.data.resolve_data_config(model=model)
    assert data_config["input_size"] == (3, 224, 224)
    assert data_config["interpolation"] == "bicubic"
    assert data_config["crop_pct"] == 0.875
    assert data_config["mean"] == (0.5, 0.5, 0.5)
    stored = load_file(checkpoint)
    assert torch.equal(model.state_dict()["classifier.weight"], stored["classifier.weight"])


def test_load_rejects_tag_of_other_architecture(tmp_path_factory: pytest.TempPathFactory) -> None:
    checkpoint, _ = lite0_converted(tmp_path_factory)

    with pytest.raises(CheckpointError, match="belongs to architecture 'resnet50'"):
        load_model(checkpoint=checkpoint, architecture="tf_efficientnet_lite0", pretrained_cfg="resnet50.a1_in1k")


def test_load_rejects_invalid_tag(tmp_path_factory: pytest.TempPathFactory) -> None:
    checkpoint, _ = lite0_converted(tmp_path_factory)

    with pytest.raises(CheckpointError, match=r"timm cannot build 'tf_efficientnet_lite0\.no_such_tag'"):
        load_model(
            checkpoint=checkpoint,
            architecture="tf_efficientnet_lite0",
            pretrained_cfg="tf_efficientnet_lite0.no_such_tag",
        )


def test_load_is_strict(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    checkpoint, _ = lite0_converted(tmp_path_factory)
    state_dict = load_file(checkpoint)
    del state_dict["conv_head.weight"]
    incomplete = tmp_path / "incomplete.safetensors"
    save_file(state_dict, str(incomplete))

    with pytest.raises(CheckpointError, match=r"does not fit timm's tf_efficientnet_lite0.*conv_head.weight"):
        load_model(checkpoint=incomplete, architecture="tf_efficientnet_lite0")


def test_load_rejects_other_architecture(tmp_path_factory: pytest.TempPathFactory) -> None:
    checkpoint, _ = lite0_converted(tmp_path_factory)

    with pytest.raises(CheckpointError, match="does not fit timm's tf_efficientnet_lite1"):
        load_model(checkpoint=checkpoint, architecture="tf_efficientnet_lite1")


@pytest.mark.parametrize("content", [b"", b"\x80\x02}q\x00."])
def test_load_rejects_non_safetensors(tmp_path: Path, content: bytes) -> None:
    checkpoint = tmp_path / "w.safetensors"
    checkpoint.write_bytes(content)

    with pytest.raises(CheckpointError, match="cannot be read as safetensors"):
        load_model(checkpoint=checkpoint, architecture="test_efficientnet")


def test_load_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot be read as safetensors"):
        load_model(checkpoint=tmp_path / "absent.safetensors", architecture="test_efficientnet")


def test_read_provenance_roundtrip(tmp_path_factory: pytest.TempPathFactory) -> None:
    checkpoint, record = lite0_converted(tmp_path_factory)

    assert read_provenance(checkpoint.with_name("lite0.provenance.json")) == record


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(None, "cannot be read"), ("{not json", "not valid JSON"), ("[1, 2]", "contains a list")],
)
def test_read_provenance_rejects(tmp_path: Path, content: str | None, fragment: str) -> None:
    path = tmp_path / "provenance.json"
    if content is not None:
        path.write_text(content)

    with pytest.raises(CheckpointError, match=fragment):
        read_provenance(path)
