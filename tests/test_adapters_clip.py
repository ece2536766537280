"""The OpenAI CLIP adapter on synthetic state dicts with the real ViT-B/32 shapes."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models.vision_transformer import _convert_openai_clip

from imagebench.checkpoints.adapters_clip import adapt_openai_clip
from imagebench.errors import CheckpointError

ARCHITECTURE = "vit_base_patch32_clip_quickgelu_224"
EMBED_DIM = 512
NUM_CLASSES = 1000

# timm key fragment -> OpenAI CLIP key fragment, the inverse of the adapter's renames.
_INVERSE = (
    ("patch_embed.proj", "conv1"),
    ("pos_embed", "positional_embedding"),
    ("blocks.", "transformer.resblocks."),
    ("norm_pre", "ln_pre"),
    ("norm1", "ln_1"),
    ("norm2", "ln_2"),
    ("attn.qkv.", "attn.in_proj_"),
    ("attn.proj", "attn.out_proj"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
)


def reference_state_dict(num_classes: int) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        model = timm.create_model(ARCHITECTURE, pretrained=False, num_classes=num_classes)
    return model.state_dict()


def to_openai_clip(timm_state: dict[str, torch.Tensor], *, prefix: str) -> dict[str, torch.Tensor]:
    """Write a timm-keyed image tower (without its head) in the OpenAI CLIP key layout."""
    clip_state = {}
    for key, tensor in timm_state.items():
        if key.startswith("head."):
            continue
        name = "ln_post" + key[len("norm") :] if key.startswith("norm.") else key
        for timm_name, clip_name in _INVERSE:
            name = name.replace(timm_name, clip_name)
        if name == "cls_token":
            name, tensor = "class_embedding", tensor.reshape(-1)
        elif name == "positional_embedding":
            tensor = tensor.squeeze(0)
        clip_state[f"{prefix}visual.{name}"] = tensor.clone()
    return clip_state


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return reference_state_dict(NUM_CLASSES)


@pytest.fixture(scope="module")
def timm_state(reference) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {key: torch.randn(value.shape, generator=generator) for key, value in reference.items()}


@pytest.fixture(scope="module")
def soup_ingredient(timm_state) -> dict[str, torch.Tensor]:
    """A model-soups ingredient: CLIP under ``model.``, text-tower keys, and a 1000-way head on the 512-d embedding."""
    generator = torch.Generator().manual_seed(1)
    state = to_openai_clip(timm_state, prefix="model.")
    state["model.visual.proj"] = torch.randn(768, EMBED_DIM, generator=generator)
    state["model.positional_embedding"] = torch.randn(77, EMBED_DIM, generator=generator)
    state["model.token_embedding.weight"] = torch.randn(16, EMBED_DIM, generator=generator)
    state["model.logit_scale"] = torch.tensor(4.6)
    state["classification_head.weight"] = torch.randn(NUM_CLASSES, EMBED_DIM, generator=generator)
    state["classification_head.bias"] = torch.randn(NUM_CLASSES, generator=generator)
    return state


def test_round_trip_restores_timm_tensors(soup_ingredient, timm_state, reference):
    adapted = adapt_openai_clip(soup_ingredient, reference)

    assert set(adapted) == set(reference)
    for key, tensor in timm_state.items():
        if not key.startswith("head."):
            assert torch.equal(adapted[key], tensor), key


def test_head_folds_projection(soup_ingredient, reference):
    adapted = adapt_openai_clip(soup_ingredient, reference)

    expected = soup_ingredient["classification_head.weight"].double() @ soup_ingredient["model.visual.proj"].double().t()
    torch.testing.assert_close(adapted["head.weight"], expected.float())
    assert torch.equal(adapted["head.bias"], soup_ingredient["classification_head.bias"])


@pytest.mark.parametrize("prefix", ["", "module.", "model."])
def test_matches_timm_converter_without_head(timm_state, prefix):
    reference = reference_state_dict(EMBED_DIM)
    clip_state = to_openai_clip(timm_state, prefix=prefix)
    clip_state[f"{prefix}visual.proj"] = torch.randn(768, EMBED_DIM, generator=torch.Generator().manual_seed(2))

    adapted = adapt_openai_clip(clip_state, reference)
    bare = {key[len(prefix) :]: value for key, value in clip_state.items()}
    expected = _convert_openai_clip(bare, model=None)

    assert set(adapted) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(adapted[key], tensor), key


def test_folded_logits_equal_unnormalised_head(soup_ingredient, reference):
    model = timm.create_model(ARCHITECTURE, pretrained=False, num_classes=NUM_CLASSES).eval()
    model.load_state_dict(adapt_openai_clip(soup_ingredient, reference), strict=True)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))

    with torch.inference_mode():
        pooled = model.forward_head(model.forward_features(images), pre_logits=True)
        logits = model(images)
    embedding = pooled.double() @ soup_ingredient["model.visual.proj"].double()
    weight = soup_ingredient["classification_head.weight"].double()
    bias = soup_ingredient["classification_head.bias"].double()

    torch.testing.assert_close(logits.double(), embedding @ weight.t() + bias, rtol=1e-4, atol=1e-3)
    # Without a bias the L2 normalisation of model-soups scales each row of logits by a positive
    # number, which leaves the ranking unchanged.
    normalised = (embedding / embedding.norm(dim=-1, keepdim=True)) @ weight.t()
    assert torch.equal((embedding @ weight.t()).topk(5).indices, normalised.topk(5).indices)


def test_shape_mismatch_is_reported(soup_ingredient, reference):
    broken = dict(soup_ingredient)
    broken["model.visual.conv1.weight"] = broken["model.visual.conv1.weight"][:, :, :16, :16]

    with pytest.raises(CheckpointError, match=r"patch_embed\.proj\.weight has shape \(768, 3, 16, 16\)"):
        adapt_openai_clip(broken, reference)


def test_class_count_mismatch_is_reported(soup_ingredient):
    with pytest.raises(CheckpointError, match=r"head\.weight has shape \(1000, 768\) but the timm model expects \(10, 768\)"):
        adapt_openai_clip(soup_ingredient, reference_state_dict(10))


def test_head_of_wrong_width_is_rejected(soup_ingredient, reference):
    broken = dict(soup_ingredient)
    broken["classification_head.weight"] = torch.zeros(NUM_CLASSES, 768)

    with pytest.raises(CheckpointError, match="classification_head.weight has shape"):
        adapt_openai_clip(broken, reference)


def test_missing_block_is_reported(soup_ingredient, reference):
    shallow = {key: value for key, value in soup_ingredient.items() if "resblocks.11." not in key}

    with pytest.raises(CheckpointError, match=r"missing \['blocks\.11\."):
        adapt_openai_clip(shallow, reference)


def test_non_clip_state_dict_is_rejected(reference):
    with pytest.raises(CheckpointError, match="visual.class_embedding"):
        adapt_openai_clip({"conv_stem.weight": torch.zeros(1)}, reference)


def test_missing_projection_is_rejected(soup_ingredient, reference):
    without = {key: value for key, value in soup_ingredient.items() if key != "model.visual.proj"}

    with pytest.raises(CheckpointError, match="visual.proj"):
        adapt_openai_clip(without, reference)
