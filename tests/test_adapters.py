from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import timm
import timm.data
import torch
from helpers_checkpoints import lite0_converted, lite0_raw_weights
from PIL import Image

from imagebench.checkpoints.adapters import ADAPTERS, adapt_efficientnet_pytorch
from imagebench.checkpoints.load import load_model
from imagebench.checkpoints.state_dict import read_state_dict
from imagebench.errors import CheckpointError

IMAGE_COUNT = 8


@pytest.fixture(scope="module")
def lite0_source(tmp_path_factory: pytest.TempPathFactory) -> OrderedDict[str, torch.Tensor]:
    raw_path, _ = lite0_raw_weights(tmp_path_factory)
    return OrderedDict(read_state_dict(model="lite0", path=raw_path))


@pytest.fixture(scope="module")
def lite0_reference() -> dict[str, torch.Tensor]:
    return timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()


def sample_images(sample_dir: Path) -> list[Path]:
    images = sorted(sample_dir.glob("*.JPEG"))
    step = len(images) // IMAGE_COUNT
    return images[::step][:IMAGE_COUNT]


def test_efficientnet_pytorch_logits_match_original(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> None:
    from efficientnet_lite_pytorch import EfficientNet

    raw_path, _ = lite0_raw_weights(tmp_path_factory)
    checkpoint, _ = lite0_converted(tmp_path_factory)
    converted = load_model(checkpoint=checkpoint, architecture="tf_efficientnet_lite0")
    # The original implementation, from the efficientnet-lite-pytorch package, loads the same .pth.
    original = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(raw_path)).eval()

    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=converted))
    paths = sample_images(sample_dir)
    batch = torch.stack([transform(Image.open(path).convert("RGB")) for path in paths])
    with torch.inference_mode():
        converted_logits = converted(batch)
        original_logits = original(batch)

    assert len(paths) == IMAGE_COUNT
    assert converted_logits.shape == (IMAGE_COUNT, 1000)
    assert (converted_logits - original_logits).abs().max().item() < 1e-3
    assert torch.equal(converted_logits.topk(5).indices, original_logits.topk(5).indices)

    # The weights are real ImageNet weights only if they mostly find each image's own class.
    synsets = timm.data.ImageNetInfo().label_names()
    true_classes = [synsets.index(path.name.split("_")[0]) for path in paths]
    hits = sum(
        label in top5 for label, top5 in zip(true_classes, converted_logits.topk(5).indices.tolist(), strict=True)
    )
    assert hits >= IMAGE_COUNT - 2


def test_efficientnet_pytorch_maps_names(
    lite0_source: OrderedDict[str, torch.Tensor], lite0_reference: dict[str, torch.Tensor]
) -> None:
    adapted = adapt_efficientnet_pytorch(lite0_source, lite0_reference)

    assert set(adapted) == set(lite0_reference)
    assert adapted["conv_stem.weight"] is lite0_source["_conv_stem.weight"]
    assert adapted["bn1.running_var"] is lite0_source["_bn0.running_var"]
    assert adapted["blocks.0.0.conv_dw.weight"] is lite0_source["_blocks.0._depthwise_conv.weight"]
    assert adapted["blocks.0.0.conv_pw.weight"] is lite0_source["_blocks.0._project_conv.weight"]
    assert adapted["blocks.1.1.conv_pw.weight"] is lite0_source["_blocks.2._expand_conv.weight"]
    assert adapted["blocks.6.0.conv_pwl.weight"] is lite0_source["_blocks.15._project_conv.weight"]
    assert adapted["blocks.6.0.bn3.num_batches_tracked"] is lite0_source["_blocks.15._bn2.num_batches_tracked"]
    assert adapted["bn2.weight"] is lite0_source["_bn1.weight"]
    assert adapted["classifier.weight"] is lite0_source["_fc.weight"]


def test_efficientnet_pytorch_rejects_reordering(
    lite0_source: OrderedDict[str, torch.Tensor], lite0_reference: dict[str, torch.Tensor]
) -> None:
    # Swapping two tensors of the same shape leaves every shape check passing.
    reordered = OrderedDict(lite0_source)
    reordered.move_to_end("_bn0.weight")

    with pytest.raises(CheckpointError) as raised:
        adapt_efficientnet_pytorch(reordered, lite0_reference)

    assert "tensor 1 is '_bn0.bias'" in str(raised.value)
    assert "'bn1.weight'" in str(raised.value)


def test_efficientnet_pytorch_rejects_same_shape_swap(
    lite0_source: OrderedDict[str, torch.Tensor], lite0_reference: dict[str, torch.Tensor]
) -> None:
    keys = list(lite0_source)
    first, second = keys.index("_bn0.running_mean"), keys.index("_bn0.running_var")
    keys[first], keys[second] = keys[second], keys[first]
    swapped = OrderedDict((key, lite0_source[key]) for key in keys)

    with pytest.raises(CheckpointError, match=r"tensor 3 is '_bn0.running_var', which maps to 'bn1.running_var'"):
        adapt_efficientnet_pytorch(swapped, lite0_reference)


def test_efficientnet_pytorch_rejects_sorted_keys(
    lite0_source: OrderedDict[str, torch.Tensor], lite0_reference: dict[str, torch.Tensor]
) -> None:
    sorted_source = OrderedDict(sorted(lite0_source.items()))

    with pytest.raises(CheckpointError, match="in another order"):
        adapt_efficientnet_pytorch(sorted_source, lite0_reference)


def test_efficientnet_pytorch_rejects_wrong_shape(
    lite0_source: OrderedDict[str, torch.Tensor], lite0_reference: dict[str, torch.Tensor]
) -> None:
    changed = OrderedDict(lite0_source)
    changed["_fc.bias"] = torch.zeros(10)

    with pytest.raises(CheckpointError, match=r"'_fc.bias' has shape \(10,\) .* 'classifier.bias' has shape \(1000,\)"):
        adapt_efficientnet_pytorch(changed, lite0_reference)


def test_efficientnet_pytorch_rejects_unknown_layer(
    lite0_source: OrderedDict[str, torch.Tensor], lite0_reference: dict[str, torch.Tensor]
) -> None:
    renamed = OrderedDict(
        (key.replace("_blocks.3._depthwise_conv", "_blocks.3._dw_conv"), value) for key, value in lite0_source.items()
    )

    with pytest.raises(
        CheckpointError, match=r"'_blocks\.3\._dw_conv\.weight', which maps to '_blocks\.3\._dw_conv\.weight'"
    ):
        adapt_efficientnet_pytorch(renamed, lite0_reference)


def test_efficientnet_pytorch_rejects_other_architecture(lite0_source: OrderedDict[str, torch.Tensor]) -> None:
    lite1_reference = timm.create_model("tf_efficientnet_lite1", pretrained=False).state_dict()

    with pytest.raises(CheckpointError, match=r"the source has 247 tensors .* the timm model has 322"):
        adapt_efficientnet_pytorch(lite0_source, lite1_reference)


def test_efficientnet_pytorch_fills_num_batches_tracked(
    lite0_source: OrderedDict[str, torch.Tensor], lite0_reference: dict[str, torch.Tensor]
) -> None:
    stripped = OrderedDict((key, value) for key, value in lite0_source.items() if "num_batches_tracked" not in key)

    adapted = adapt_efficientnet_pytorch(stripped, lite0_reference)

    assert set(adapted) == set(lite0_reference)
    assert adapted["bn1.num_batches_tracked"].dtype == torch.int64
    assert adapted["bn1.num_batches_tracked"].item() == 0
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(adapted, strict=True)


def test_timm_adapter_is_identity(lite0_reference: dict[str, torch.Tensor]) -> None:
    adapted = ADAPTERS["timm"](lite0_reference, lite0_reference)

    assert list(adapted) == list(lite0_reference)
    assert all(adapted[key] is lite0_reference[key] for key in lite0_reference)


def test_adapter_registry_names() -> None:
    assert set(ADAPTERS) == {"timm", "efficientnet_pytorch", "openai_clip"}
