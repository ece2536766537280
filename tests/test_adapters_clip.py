"""The OpenAI CLIP adapter and the model-soups head, on synthetic state dicts with the real ViT-B/32 shapes.

The tests do not download the 72 model-soups ingredients (about 350 MB each). The state dicts
below have their keys and shapes, filled with seeded random numbers.
"""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models.vision_transformer import _convert_openai_clip

from imagebench.checkpoints.adapters import head_spec
from imagebench.checkpoints.adapters_clip import adapt_openai_clip, openai_clip_head
from imagebench.checkpoints.convert import convert_checkpoint
from imagebench.checkpoints.heads import NormalizedEmbeddingHead, attach_head, normalized_embedding_spec
from imagebench.checkpoints.load import load_model, read_head
from imagebench.errors import CheckpointError
from imagebench.io import sha256_file

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


SOUP_HEAD = normalized_embedding_spec(embed_dim=EMBED_DIM, num_classes=NUM_CLASSES)


def reference_state_dict(num_classes: int, head: dict | None = None) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        model = timm.create_model(ARCHITECTURE, pretrained=False, num_classes=num_classes)
    return attach_head(model, head, name=ARCHITECTURE).state_dict()


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
    return reference_state_dict(EMBED_DIM, SOUP_HEAD)


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


def test_head_keeps_projection_and_classifier_apart(soup_ingredient, reference):
    adapted = adapt_openai_clip(soup_ingredient, reference)

    assert torch.equal(adapted["head.projection.weight"], soup_ingredient["model.visual.proj"].t())
    assert torch.equal(adapted["head.classifier.weight"], soup_ingredient["classification_head.weight"])
    assert torch.equal(adapted["head.classifier.bias"], soup_ingredient["classification_head.bias"])


def test_head_spec_follows_the_classification_head(soup_ingredient):
    bare = {key: value for key, value in soup_ingredient.items() if not key.startswith("classification_head.")}

    assert openai_clip_head(soup_ingredient) == SOUP_HEAD
    assert head_spec("openai_clip", soup_ingredient) == SOUP_HEAD
    assert openai_clip_head(bare) is None
    assert head_spec("timm", soup_ingredient) is None


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


def model_soups_logits(soup_ingredient: dict[str, torch.Tensor], pooled: torch.Tensor) -> torch.Tensor:
    """The forward pass of model-soups' ModelWrapper after CLIP's ln_post, in float64."""
    embedding = pooled.double() @ soup_ingredient["model.visual.proj"].double()
    embedding = embedding / embedding.norm(dim=-1, keepdim=True)
    weight = soup_ingredient["classification_head.weight"].double()
    return embedding @ weight.t() + soup_ingredient["classification_head.bias"].double()


def test_logits_equal_model_soups_forward(soup_ingredient, reference):
    model = timm.create_model(ARCHITECTURE, pretrained=False)
    model = attach_head(model, SOUP_HEAD, name=ARCHITECTURE).eval()
    model.load_state_dict(adapt_openai_clip(soup_ingredient, reference), strict=True)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))

    with torch.inference_mode():
        pooled = model.forward_head(model.forward_features(images), pre_logits=True)
        logits = model(images)

    # The bias is not zero, so an unnormalised head would rank classes differently.
    torch.testing.assert_close(logits.double(), model_soups_logits(soup_ingredient, pooled), rtol=1e-5, atol=1e-5)
    assert model.num_classes == NUM_CLASSES


def test_converted_ingredient_loads_with_its_head(tmp_path, soup_ingredient):
    raw = tmp_path / "model_0.pt"
    torch.save(soup_ingredient, raw)
    record = convert_checkpoint(
        model="clip.model_0", raw_path=raw, architecture=ARCHITECTURE, weights_format="openai_clip",
        output=tmp_path / "model_0.safetensors",
        provenance={"source": {"url": "https://example.org/model_0.pt"}, "sha256": sha256_file(raw)},
        provenance_output=tmp_path / "model_0.json",
    )  # fmt: skip
    raw.unlink()

    model = load_model(checkpoint=tmp_path / "model_0.safetensors", architecture=ARCHITECTURE)
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        pooled = model.forward_head(model.forward_features(images), pre_logits=True)
        logits = model(images)

    assert record["head"] == SOUP_HEAD
    assert read_head(tmp_path / "model_0.safetensors") == SOUP_HEAD
    assert isinstance(model.head, NormalizedEmbeddingHead)
    torch.testing.assert_close(logits.double(), model_soups_logits(soup_ingredient, pooled), rtol=1e-5, atol=1e-5)


def test_averaging_commutes_with_conversion(soup_ingredient, reference):
    generator = torch.Generator().manual_seed(5)
    other = {key: value + torch.randn(value.shape, generator=generator) for key, value in soup_ingredient.items()}
    mean_of_raw = {key: (soup_ingredient[key] + other[key]) / 2 for key in soup_ingredient}

    converted = [adapt_openai_clip(state, reference) for state in (soup_ingredient, other)]
    mean_of_converted = {key: (converted[0][key] + converted[1][key]) / 2 for key in converted[0]}
    converted_mean = adapt_openai_clip(mean_of_raw, reference)

    for key, tensor in converted_mean.items():
        assert torch.equal(mean_of_converted[key], tensor), key


def test_shape_mismatch_is_reported(soup_ingredient, reference):
    broken = dict(soup_ingredient)
    broken["model.visual.conv1.weight"] = broken["model.visual.conv1.weight"][:, :, :16, :16]

    with pytest.raises(CheckpointError, match=r"patch_embed\.proj\.weight has shape \(768, 3, 16, 16\)"):
        adapt_openai_clip(broken, reference)


def test_class_count_mismatch_is_reported(soup_ingredient):
    ten_classes = reference_state_dict(EMBED_DIM, normalized_embedding_spec(embed_dim=EMBED_DIM, num_classes=10))

    with pytest.raises(CheckpointError, match=r"head\.classifier\.weight has shape \(1000, 512\) but the timm model "
                                              r"expects \(10, 512\)"):  # fmt: skip
        adapt_openai_clip(soup_ingredient, ten_classes)


def test_soup_head_needs_matching_reference(soup_ingredient):
    with pytest.raises(CheckpointError, match=r"unexpected \['head\.classifier\.bias'"):
        adapt_openai_clip(soup_ingredient, reference_state_dict(EMBED_DIM))


def test_head_needs_a_linear_timm_head():
    model = timm.create_model("test_efficientnet", pretrained=False)

    with pytest.raises(CheckpointError, match="has no linear `head` layer"):
        attach_head(model, SOUP_HEAD, name="test_efficientnet")


def test_head_of_wrong_width_is_rejected(soup_ingredient, reference):
    broken = dict(soup_ingredient)
    broken["classification_head.weight"] = torch.zeros(NUM_CLASSES, 768)

    with pytest.raises(CheckpointError, match="the classification head has shape"):
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
