from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from helpers_checkpoints import write_hostile
from safetensors.torch import save_file

from imagebench.checkpoints.state_dict import read_state_dict
from imagebench.errors import CheckpointError


def small_state_dict() -> dict[str, torch.Tensor]:
    return {
        "conv.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2),
        "bn.num_batches_tracked": torch.tensor(5),
    }


def test_hostile_pickle_runs_when_unpickled(tmp_path: Path) -> None:
    # The marker proves that the hostile files below would run their command if unpickled without checks.
    marker = tmp_path / "marker"
    path = tmp_path / "hostile.pkl"
    write_hostile(path, marker, kind="bare-pickle")

    with open(path, "rb") as handle:
        pickle.load(handle)  # unpickled on purpose, in a temporary folder

    assert marker.exists()


@pytest.mark.parametrize("kind", ["zip", "legacy", "bare-pickle"])
def test_read_rejects_hostile_pickle(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "hostile.pt"
    write_hostile(path, marker, kind=kind)

    with pytest.raises(CheckpointError) as raised:
        read_state_dict(model="evil", path=path)

    assert "not a plain tensor state dict; refusing to unpickle code" in str(raised.value)
    assert "evil" in str(raised.value)
    assert not marker.exists()


def test_read_hostile_message_names_global(tmp_path: Path) -> None:
    path = tmp_path / "hostile.pt"
    write_hostile(path, tmp_path / "marker", kind="zip")

    with pytest.raises(CheckpointError, match="refusing to unpickle code") as raised:
        read_state_dict(model="evil", path=path)

    assert "system" in str(raised.value)


@pytest.mark.parametrize("legacy", [False, True])
def test_read_torch_file_roundtrip(tmp_path: Path, legacy: bool) -> None:
    path = tmp_path / "w.pt"
    torch.save(small_state_dict(), path, _use_new_zipfile_serialization=not legacy)

    loaded = read_state_dict(model="m", path=path)

    assert list(loaded) == ["conv.weight", "bn.num_batches_tracked"]
    assert torch.equal(loaded["conv.weight"], small_state_dict()["conv.weight"])


@pytest.mark.parametrize("container_key", ["state_dict", "model", "model_state_dict"])
def test_read_unwraps_container(tmp_path: Path, container_key: str) -> None:
    path = tmp_path / "checkpoint.pth"
    torch.save({container_key: small_state_dict(), "epoch": 90, "arch": "resnet50"}, path)

    loaded = read_state_dict(model="m", path=path)

    assert set(loaded) == {"conv.weight", "bn.num_batches_tracked"}


def test_read_rejects_non_tensor_content(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save({"conv.weight": torch.ones(2), "epoch": 3}, path)

    with pytest.raises(CheckpointError, match=r"int 3 under 'epoch'.*not a plain tensor state dict"):
        read_state_dict(model="m", path=path)


def test_read_rejects_tensor_list(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save([torch.ones(2)], path)

    with pytest.raises(CheckpointError, match="contains a list"):
        read_state_dict(model="m", path=path)


@pytest.mark.parametrize("legacy", [False, True])
def test_read_rejects_truncated_torch_file(tmp_path: Path, legacy: bool) -> None:
    full = tmp_path / "full.pt"
    torch.save({"w": torch.randn(1000)}, full, _use_new_zipfile_serialization=not legacy)
    data = full.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) * 2 // 3])

    with pytest.raises(CheckpointError, match="truncated or damaged"):
        read_state_dict(model="m", path=truncated)


def test_read_safetensors_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file(small_state_dict(), str(path))

    loaded = read_state_dict(model="m", path=path)

    assert torch.equal(loaded["conv.weight"], small_state_dict()["conv.weight"])


def safetensors_parts(path: Path) -> tuple[dict[str, object], bytes]:
    data = path.read_bytes()
    (header_size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + header_size]), data[8 + header_size :]


def write_safetensors_parts(
    path: Path, header: dict[str, object], payload: bytes, *, declared: int | None = None
) -> None:
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", declared if declared is not None else len(encoded)) + encoded + payload)


def test_read_rejects_lying_safetensors_shape(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(10)}, str(path))
    header, payload = safetensors_parts(path)
    header["w"] = {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}
    write_safetensors_parts(path, header, payload)

    with pytest.raises(CheckpointError, match=r"safetensors file .* is invalid"):
        read_state_dict(model="m", path=path)


def test_read_rejects_inconsistent_safetensors_offsets(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(10)}, str(path))
    header, payload = safetensors_parts(path)
    header["w"] = {"dtype": "F32", "shape": [20], "data_offsets": [0, 40]}
    write_safetensors_parts(path, header, payload)

    with pytest.raises(CheckpointError, match="is invalid"):
        read_state_dict(model="m", path=path)


def test_read_rejects_oversized_safetensors_header(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(10)}, str(path))
    header, payload = safetensors_parts(path)
    write_safetensors_parts(path, header, payload, declared=10**9)

    with pytest.raises(CheckpointError, match="header of 1000000000 bytes"):
        read_state_dict(model="m", path=path)


def test_read_rejects_truncated_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(100)}, str(path))
    path.write_bytes(path.read_bytes()[:-16])

    with pytest.raises(CheckpointError, match="is invalid"):
        read_state_dict(model="m", path=path)


@pytest.mark.parametrize("content", [b"", b"hello world\n", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64])
def test_read_rejects_unknown_content(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "w.pt"
    path.write_bytes(content)

    with pytest.raises(CheckpointError, match=r"neither a safetensors file nor a torch\.save file"):
        read_state_dict(model="m", path=path)


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot read weights file"):
        read_state_dict(model="m", path=tmp_path / "absent.pt")
