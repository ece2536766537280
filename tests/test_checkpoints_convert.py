from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from helpers_checkpoints import LITE0_SHA256, lite0_converted, lite0_raw_weights, write_hostile
from safetensors.torch import load_file, save_file

from imagebench.checkpoints.convert import convert_checkpoint
from imagebench.errors import CheckpointError

TINY_ARCHITECTURE = "test_efficientnet"


def tiny_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return timm.create_model(TINY_ARCHITECTURE, pretrained=False).state_dict()


def raw_provenance(path: Path) -> dict[str, Any]:
    return {"source": {"file": str(path)}, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def convert_tiny(tmp_path: Path, raw_path: Path, **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "model": "tiny",
        "raw_path": raw_path,
        "architecture": TINY_ARCHITECTURE,
        "weights_format": "timm",
        "output": tmp_path / "out" / "tiny.safetensors",
        "provenance": raw_provenance(raw_path),
        "provenance_output": tmp_path / "out" / "tiny.provenance.json",
    }
    arguments.update(overrides)
    return convert_checkpoint(**arguments)


def test_convert_lite0_record(tmp_path_factory: pytest.TempPathFactory) -> None:
    checkpoint, record = lite0_converted(tmp_path_factory)
    _, fetch_provenance = lite0_raw_weights(tmp_path_factory)

    reference_keys = set(timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict())
    assert set(load_file(checkpoint)) == reference_keys
    assert record["model"] == "lite0"
    assert record["architecture"] == "tf_efficientnet_lite0"
    assert record["weights_format"] == "efficientnet_pytorch"
    assert record["source"] == fetch_provenance["source"]
    assert record["fetch"] == fetch_provenance
    assert record["raw_sha256"] == LITE0_SHA256
    assert record["safetensors_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert record["param_count"] == 4652008
    assert record["tensor_count"] == len(reference_keys)
    assert record["torch_version"] == torch.__version__
    assert record["timm_version"] == timm.__version__
    provenance_file = checkpoint.with_name("lite0.provenance.json")
    assert json.loads(provenance_file.read_text()) == record


def test_convert_rerun_is_byte_identical(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    raw_path, provenance = lite0_raw_weights(tmp_path_factory)
    arguments: dict[str, Any] = {
        "model": "lite0",
        "raw_path": raw_path,
        "architecture": "tf_efficientnet_lite0",
        "weights_format": "efficientnet_pytorch",
        "output": tmp_path / "lite0.safetensors",
        "provenance": provenance,
        "provenance_output": tmp_path / "lite0.json",
    }

    convert_checkpoint(**arguments)
    first = ((tmp_path / "lite0.safetensors").read_bytes(), (tmp_path / "lite0.json").read_bytes())
    convert_checkpoint(**arguments)
    second = ((tmp_path / "lite0.safetensors").read_bytes(), (tmp_path / "lite0.json").read_bytes())

    assert first == second
    assert sorted(path.name for path in tmp_path.iterdir()) == ["lite0.json", "lite0.safetensors"]


@pytest.mark.parametrize("kind", ["zip", "legacy", "bare-pickle"])
def test_convert_rejects_hostile_pickle(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "marker"
    raw_path = tmp_path / "hostile.pth"
    write_hostile(raw_path, marker, kind=kind)

    with pytest.raises(CheckpointError, match="is not a plain tensor state dict"):
        convert_tiny(tmp_path, raw_path)

    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_convert_lists_every_mismatch(tmp_path: Path) -> None:
    state_dict = tiny_state_dict()
    del state_dict["conv_stem.weight"]
    state_dict["head.extra.weight"] = torch.zeros(3)
    state_dict["classifier.bias"] = torch.zeros(7)
    raw_path = tmp_path / "tiny.safetensors"
    save_file(state_dict, str(raw_path))

    with pytest.raises(CheckpointError) as raised:
        convert_tiny(tmp_path, raw_path)

    message = str(raised.value)
    assert "tiny" in message
    assert "1 missing keys (conv_stem.weight)" in message
    assert "1 unexpected keys (head.extra.weight)" in message
    assert "1 wrong shapes (classifier.bias: (7,) instead of (1000,))" in message
    assert not (tmp_path / "out").exists()


def test_convert_timm_container_checkpoint(tmp_path: Path) -> None:
    raw_path = tmp_path / "tiny.pth"
    torch.save({"state_dict": tiny_state_dict(), "epoch": 10}, raw_path)

    record = convert_tiny(tmp_path, raw_path)

    converted = load_file(tmp_path / "out" / "tiny.safetensors")
    assert set(converted) == set(tiny_state_dict())
    assert torch.equal(converted["conv_stem.weight"], tiny_state_dict()["conv_stem.weight"])
    assert record["weights_format"] == "timm"


def test_convert_rejects_changed_raw_file(tmp_path: Path) -> None:
    raw_path = tmp_path / "tiny.pth"
    torch.save(tiny_state_dict(), raw_path)
    provenance = {"source": {"file": "x"}, "sha256": "2" * 64}

    with pytest.raises(CheckpointError, match="changed after the fetch"):
        convert_tiny(tmp_path, raw_path, provenance=provenance)


def test_convert_rejects_unknown_format(tmp_path: Path) -> None:
    raw_path = tmp_path / "tiny.pth"
    torch.save(tiny_state_dict(), raw_path)

    with pytest.raises(CheckpointError, match="'keras' is invalid; allowed values: timm, efficientnet_pytorch"):
        convert_tiny(tmp_path, raw_path, weights_format="keras")


def test_convert_rejects_unknown_architecture(tmp_path: Path) -> None:
    raw_path = tmp_path / "tiny.pth"
    torch.save(tiny_state_dict(), raw_path)

    with pytest.raises(CheckpointError, match="timm has no architecture 'resnet_nonexistent'"):
        convert_tiny(tmp_path, raw_path, architecture="resnet_nonexistent")


def test_convert_adapter_error_names_model(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    raw_path, provenance = lite0_raw_weights(tmp_path_factory)

    with pytest.raises(CheckpointError, match=r"model 'lite0' .*the timm model has \d+") as raised:
        convert_checkpoint(
            model="lite0",
            raw_path=raw_path,
            architecture="tf_efficientnet_lite1",
            weights_format="efficientnet_pytorch",
            output=tmp_path / "w.safetensors",
            provenance=provenance,
            provenance_output=tmp_path / "w.json",
        )

    assert "architecture" in str(raised.value)
    assert list(tmp_path.iterdir()) == []
