"""Model soups: config checks, splits, averaging, the greedy rule, fine-tuning and a real soup of Lite0."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml
from safetensors.torch import load_file

from imagebench import soups
from imagebench.checkpoints import sources
from imagebench.datasets.manifest import build_manifest, read_manifest, write_manifest
from imagebench.errors import CheckpointError, ConfigError, DatasetError
from imagebench.finetune import FinetuneSettings, finetune_checkpoint, trainable_names
from imagebench.soups import (
    HeldoutScorer,
    RunningAverage,
    add_soup_entries,
    average_state_dicts,
    build_greedy_soup,
    build_uniform_soup,
    greedy_soup,
    hash_positions,
    name_pattern,
    rank_ingredients,
    read_heldout_correct,
    select_split,
    soup_evaluations,
    soup_outputs,
    split_sources,
    validate_soups,
    write_splits,
)

REPO = Path(__file__).resolve().parents[1]
LITE0_MODEL = {"architecture": "tf_efficientnet_lite0", "weights": {"timm": "tf_efficientnet_lite0.in1k"}}


def soup_config(**soup_overrides) -> dict:
    """A config with two Lite models, two datasets and one valid soup, with ``soup_overrides`` applied."""
    soup = {
        "architecture": "tf_efficientnet_lite0",
        "evaluation": {"dataset": "sample"},
        "heldout": {"fraction": 0.2},
        "finetune": {"fraction": 0.3},
        "ingredients": {
            "pretrained": {"model": "lite0"},
            "tuned": {"finetune": {"from": "lite0", "lr": 1.0e-3, "epochs": 1, "seed": 0}},
        },
    }
    soup.update(soup_overrides)
    return {
        "datasets": {
            "sample": {"layout": "synset-files", "root": "/data/sample", "shards": 2},
            "other": {"layout": "synset-files", "root": "/data/other", "shards": 1},
        },
        "models": {
            "lite0": LITE0_MODEL,
            "lite1": {"architecture": "tf_efficientnet_lite1", "weights": {"timm": "tf_efficientnet_lite1.in1k"}},
        },
        "evaluation": {"device": "cpu", "batch_size": 8, "workers": 0, "threads": 1},
        "lock_file": "workflow/downloads.lock",
        "soups": {"demo": soup},
    }


# ----------------------------------------------------------------------------- config


def test_valid_soup_is_parsed():
    soup = validate_soups(soup_config())["demo"]

    assert soup.recipes == ("uniform", "greedy")
    assert [ingredient.member for ingredient in soup.ingredients] == ["lite0", "demo.tuned"]
    assert soup.splits["finetune"] == soups.SplitSpec("finetune", "sample", 0.0, 0.3)
    assert soup.splits["heldout"] == soups.SplitSpec("heldout", "sample", 0.3, 0.5)
    assert soup.splits["evaluation"] == soups.SplitSpec("evaluation", "sample", 0.5, 1.0)


def test_mixed_architectures_are_rejected():
    config = soup_config(ingredients={"a": {"model": "lite0"}, "b": {"model": "lite1"}})

    with pytest.raises(ConfigError, match=r"ingredients\.b: model 'lite1' has architecture 'tf_efficientnet_lite1', "
                                          r"but the soup's architecture is 'tf_efficientnet_lite0'"):  # fmt: skip
        validate_soups(config)


def test_finetune_of_other_architecture_is_rejected():
    config = soup_config(ingredients={
        "a": {"model": "lite0"}, "b": {"finetune": {"from": "lite1", "lr": 0.1, "epochs": 1, "seed": 0}},
    })  # fmt: skip

    with pytest.raises(ConfigError, match="weights of different architectures cannot be averaged"):
        validate_soups(config)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"heldout": {"fraction": 0.8}}, r"fractions drawn from dataset 'sample' sum to 1\.1"),
        ({"heldout": {"fraction": 0.7}}, r"sum to 1; leave a part for the evaluation split"),
        ({"heldout": {"fraction": 0}}, r"heldout\.fraction: 0 is not allowed"),
        ({"heldout": {"dataset": "missing"}}, r"heldout\.dataset: 'missing' is not a configured dataset"),
        ({"heldout": {"dataset": "sample"}}, r"heldout\.fraction: None is not allowed"),
        ({"evaluation": {"dataset": "missing"}}, r"evaluation\.dataset: 'missing' is not a configured dataset"),
        ({"recipes": ["uniform", "best"]}, r"recipes: \['uniform', 'best'\] is not allowed"),
        ({"recipes": "greedy"}, r"recipes: .greedy. is not allowed"),
        ({"preprocessing": [224]}, r"preprocessing: \[224\] must be a mapping"),
        ({"colour": "red"}, r"unknown key\(s\) \['colour'\]"),
        ({"architecture": None}, r"architecture: None"),
        ({"ingredients": {"a": {"model": "lite0"}}}, "at least two ingredients"),
        ({"ingredients": {"a": {"model": "lite0"}, "greedy": {"model": "lite0"}}}, "not be one of uniform, greedy"),
        ({"ingredients": {"a": {"model": "lite0"}, "b": {"model": "resnet"}}}, r"b\.model: 'resnet' is not a configured"),
        ({"ingredients": {"a": {"model": "lite0"}, "b": {"checkpoint": "x"}}}, "use exactly one of the keys"),
        ({"ingredients": {"a": {"model": "lite0"}, "b": {"finetune": {"from": "lite0", "lr": -1, "epochs": 1, "seed": 0}}}},
         r"finetune\.lr: -1 is not allowed"),
        ({"ingredients": {"a": {"model": "lite0"}, "b": {"finetune": {"from": "lite0", "lr": 1, "epochs": 1}}}},
         r"missing key\(s\) \['seed'\]"),
        ({"ingredients": {"a": {"model": "lite0"}, "b": {"weights": {"url": "https://x/y.pt", "sha256": "abc"}}}},
         r"b\.weights: model 'demo\.b': sha256 'abc' is invalid"),
        ({"published_as": {"pretrained": "tf_efficientnet_lite0.in1k"}}, r"published_as: \['pretrained'\] are not recipes"),
    ],
)
def test_invalid_soup_field_is_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_soups(soup_config(**overrides))


def test_finetune_without_split_is_rejected():
    config = soup_config()
    del config["soups"]["demo"]["finetune"]

    with pytest.raises(ConfigError, match="ingredients that fine-tune need a finetune split"):
        validate_soups(config)


def test_heldout_from_other_dataset_takes_all_of_it():
    soup = validate_soups(soup_config(heldout={"dataset": "other"}, finetune={"fraction": 0.5}))["demo"]

    assert soup.splits["heldout"] == soups.SplitSpec("heldout", "other", 0.0, 1.0)
    assert soup.splits["evaluation"] == soups.SplitSpec("evaluation", "sample", 0.5, 1.0)


def test_soup_name_colliding_with_model_is_rejected():
    config = soup_config()
    config["models"]["demo.greedy"] = LITE0_MODEL

    with pytest.raises(ConfigError, match="'demo.greedy' is already a configured model"):
        validate_soups(config)


def test_demo_config_is_valid():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    demo = yaml.safe_load((REPO / "workflow" / "configs" / "soups-demo.yaml").read_text())

    parsed = validate_soups({**config, **demo})["lite0_soup"]

    assert len(parsed.ingredients) == 5
    assert {ingredient.kind for ingredient in parsed.ingredients} == {"model", "finetune"}


def test_commented_vit_recipe_is_valid(monkeypatch):
    monkeypatch.setattr(sources, "WEIGHTS_FORMATS", (*sources.WEIGHTS_FORMATS, "openai_clip"))
    text = (REPO / "workflow" / "configs" / "soups-demo.yaml").read_text()
    block = text[text.index("# datasets:") :]
    recipe = yaml.safe_load("\n".join(line[2:] for line in block.splitlines()))

    soup = validate_soups({**recipe, "models": {}})["clip_vitb32"]

    assert len(soup.ingredients) == 72
    assert {ingredient.weights_format for ingredient in soup.ingredients} == {"openai_clip"}
    assert soup.splits["heldout"] == soups.SplitSpec("heldout", "imagenet-train", 0.0, 0.02)
    assert soup.ingredients[43].weights["url"].endswith("/v0.0.2/model_43.pt")
    assert {ingredient.weights["sha256"] for ingredient in soup.ingredients} == {"lock"}


# --------------------------------------------------------------------- workflow helpers


def test_soup_entries_are_added_and_marked():
    config = add_soup_entries(soup_config())

    assert config["models"]["demo.greedy"] == {"architecture": "tf_efficientnet_lite0", "soup": "demo"}
    assert config["models"]["demo.tuned"]["soup"] == "demo"
    assert config["datasets"]["demo.evaluation"] == {"layout": "synset-files", "root": "/data/sample", "shards": 2,
                                                     "soup": "demo"}  # fmt: skip
    assert validate_soups(config)["demo"] == validate_soups(soup_config())["demo"]


def test_published_dataset_is_kept_only_for_whole_dataset():
    config = soup_config(heldout={"dataset": "other", "fraction": 0.5}, finetune={"dataset": "other", "fraction": 0.5},
                         published_as={"greedy": "clip_vit_b32_greedy_soup"})  # fmt: skip
    config["datasets"]["sample"]["published_dataset"] = "imagenet-val"
    whole = add_soup_entries(config)

    config["soups"]["demo"]["finetune"] = {"fraction": 0.5}
    part = add_soup_entries(config)

    assert whole["datasets"]["demo.evaluation"]["published_dataset"] == "imagenet-val"
    assert "published_dataset" not in part["datasets"]["demo.evaluation"]
    assert whole["models"]["demo.greedy"]["published_as"] == "clip_vit_b32_greedy_soup"


def test_soups_are_evaluated_only_on_their_split():
    pairs = soup_evaluations(soup_config())

    assert pairs == [("demo.evaluation", model) for model in ("demo.uniform", "demo.greedy", "lite0", "demo.tuned")]


def test_outputs_include_checkpoints_and_figure():
    assert soup_outputs(soup_config(recipes=["greedy"])) == [
        "results/checkpoints/demo.greedy.safetensors",
        "results/figures/soup-demo.png",
        "results/figures/soup-demo.svg",
    ]


def test_name_pattern_matches_whole_names_only():
    pattern = re.compile(name_pattern(["demo.tuned", "demo.tuned2"]))

    assert pattern.fullmatch("demo.tuned")
    assert pattern.fullmatch("demo.tuned2")
    assert not pattern.fullmatch("demoXtuned")
    assert not re.compile(name_pattern([])).fullmatch("")


# ------------------------------------------------------------------------------ splits


def test_hash_positions_are_stable_and_salted():
    first = hash_positions(["n01440764_1", "n01443537_2"], salt="a")

    assert first == hash_positions(["n01440764_1", "n01443537_2"], salt="a")
    assert first != hash_positions(["n01440764_1", "n01443537_2"], salt="b")
    assert all(0.0 <= position < 1.0 for position in first)


def test_split_ignores_other_images():
    ids = [f"n{index:08d}_x" for index in range(400)]
    manifest = pl.DataFrame({"image_id": ids, "path": [f"{name}.JPEG" for name in ids], "shard": [0] * 400})

    small = select_split(manifest.head(200), salt="s", start=0.0, stop=0.25, shards=1)
    large = select_split(manifest, salt="s", start=0.0, stop=0.25, shards=1)

    assert set(small["image_id"]) == set(large["image_id"]) & set(ids[:200])
    assert 60 <= large.height <= 140


def test_splits_partition_sample_and_are_written(tmp_path, sample_dir):
    manifest_path = tmp_path / "sample.parquet"
    frame = build_manifest(root=sample_dir, layout="synset-files", num_shards=4)
    write_manifest(frame, manifest_path, layout="synset-files", num_shards=4)
    config = soup_config()
    config["datasets"]["sample"]["root"] = str(sample_dir)
    soup = validate_soups(config)["demo"]
    outputs = {name: tmp_path / f"{name}.parquet" for name in ("finetune", "heldout", "evaluation")}

    record = write_splits(soup="demo", salt=soup.salt, sources=split_sources(soup, config),
                          manifests={"sample": manifest_path}, outputs=outputs, record_output=tmp_path / "splits.json")  # fmt: skip

    written = {name: read_manifest(path) for name, path in outputs.items()}
    ids = [set(frame["image_id"]) for frame, _ in written.values()]
    assert sum(len(part) for part in ids) == frame.height
    assert set().union(*ids) == set(frame["image_id"])
    assert written["evaluation"][1]["num_shards"] == 2
    assert written["heldout"][1]["num_shards"] == 1
    assert json.loads((tmp_path / "splits.json").read_text()) == record
    assert record["splits"]["heldout"]["interval"] == [0.3, 0.5]


def test_overlapping_datasets_are_rejected(tmp_path, small_sample):
    manifest_path = tmp_path / "sample.parquet"
    frame = build_manifest(root=small_sample, layout="synset-files", num_shards=1)
    write_manifest(frame, manifest_path, layout="synset-files", num_shards=1)
    config = soup_config(heldout={"dataset": "other"}, ingredients={"a": {"model": "lite0"}, "b": {"model": "lite0"}})
    del config["soups"]["demo"]["finetune"]
    config["datasets"]["sample"]["root"] = config["datasets"]["other"]["root"] = str(small_sample)
    soup = validate_soups(config)["demo"]

    with pytest.raises(DatasetError, match="the heldout and evaluation splits share"):
        write_splits(soup="demo", salt=soup.salt, sources=split_sources(soup, config),
                     manifests={"sample": manifest_path, "other": manifest_path},
                     outputs={}, record_output=tmp_path / "splits.json")  # fmt: skip
    assert not (tmp_path / "splits.json").exists()


def test_same_files_under_other_names_are_rejected(tmp_path, small_sample):
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for image in sorted(small_sample.iterdir()):
        synset, _, rest = image.name.partition("_")
        (renamed / f"{synset}_copy-{rest}").symlink_to(image.resolve())
    manifests = {}
    for name, root in (("sample", small_sample), ("other", renamed)):
        manifests[name] = tmp_path / f"{name}.parquet"
        write_manifest(build_manifest(root=root, layout="synset-files", num_shards=1), manifests[name],
                       layout="synset-files", num_shards=1)  # fmt: skip
    config = soup_config(heldout={"dataset": "other"}, ingredients={"a": {"model": "lite0"}, "b": {"model": "lite0"}})
    del config["soups"]["demo"]["finetune"]
    config["datasets"]["sample"]["root"], config["datasets"]["other"]["root"] = str(small_sample), str(renamed)
    soup = validate_soups(config)["demo"]

    with pytest.raises(DatasetError, match=r"share 0 image ids and \d+ files"):
        write_splits(soup="demo", salt=soup.salt, sources=split_sources(soup, config), manifests=manifests,
                     outputs={}, record_output=tmp_path / "splits.json")  # fmt: skip


def test_empty_split_is_reported(tmp_path, small_sample):
    manifest_path = tmp_path / "sample.parquet"
    write_manifest(build_manifest(root=small_sample, layout="synset-files", num_shards=1), manifest_path,
                   layout="synset-files", num_shards=1)  # fmt: skip
    config = soup_config(heldout={"fraction": 0.0001}, ingredients={"a": {"model": "lite0"}, "b": {"model": "lite0"}})
    del config["soups"]["demo"]["finetune"]
    soup = validate_soups(config)["demo"]

    with pytest.raises(DatasetError, match="heldout split of dataset 'sample'.*is empty"):
        write_splits(soup="demo", salt=soup.salt, sources=split_sources(soup, config),
                     manifests={"sample": manifest_path}, outputs={}, record_output=tmp_path / "splits.json")  # fmt: skip


# --------------------------------------------------------------------------- averaging


def test_uniform_mean_averages_floats_and_keeps_first_integers():
    state_dicts = [
        ("a", {"w": torch.tensor([1.0, 2.0]), "h": torch.tensor([1.0], dtype=torch.float16), "n": torch.tensor(5)}),
        ("b", {"w": torch.tensor([2.0, 4.0]), "h": torch.tensor([2.0], dtype=torch.float16), "n": torch.tensor(7)}),
        ("c", {"w": torch.tensor([6.0, 0.0]), "h": torch.tensor([6.0], dtype=torch.float16), "n": torch.tensor(9)}),
    ]

    mean = average_state_dicts(state_dicts)

    assert torch.equal(mean["w"], torch.tensor([3.0, 2.0]))
    assert torch.equal(mean["h"], torch.tensor([3.0], dtype=torch.float16))
    assert torch.equal(mean["n"], torch.tensor(5))
    assert mean["w"].dtype == torch.float32


def test_mean_is_accumulated_in_float64():
    # In float16, 60000 + 60000 overflows to inf; the mean itself fits.
    big = torch.tensor([60000.0], dtype=torch.float16)

    mean = average_state_dicts([("a", {"w": big}), ("b", {"w": big.clone()})])

    assert torch.equal(mean["w"], big)


def test_mean_of_many_float32_matches_float64_reference():
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(1000, generator=generator) * 1e4 + 1e7 for _ in range(7)]

    mean = average_state_dicts([(str(index), {"w": tensor}) for index, tensor in enumerate(tensors)])

    expected = torch.stack([tensor.double() for tensor in tensors]).mean(dim=0).float()
    assert torch.equal(mean["w"], expected)


def test_ingredient_with_other_keys_is_rejected():
    running = RunningAverage()
    running.add({"w": torch.zeros(2)}, name="a")

    with pytest.raises(CheckpointError, match=r"ingredient 'b' has other keys than 'a': missing \['w'\]"):
        running.add({"v": torch.zeros(2)}, name="b")


def test_ingredient_with_other_shape_is_rejected():
    running = RunningAverage()
    running.add({"w": torch.zeros(2)}, name="a")

    with pytest.raises(CheckpointError, match=r"ingredient 'b': w is torch.float32 \(3,\)"):
        running.add({"w": torch.zeros(3)}, name="b")


def test_with_added_leaves_average_unchanged():
    running = RunningAverage()
    running.add({"w": torch.tensor([2.0])}, name="a")

    candidate = running.with_added({"w": torch.tensor([4.0])}, name="b")

    assert torch.equal(running.mean()["w"], torch.tensor([2.0]))
    assert torch.equal(candidate.mean()["w"], torch.tensor([3.0]))
    assert candidate.names == ["a", "b"]


# ------------------------------------------------------------------------------ greedy


def scripted(scores: dict[float, int]):
    """A held-out scorer that looks up the correct count of a candidate by the value of its single weight."""

    def score(state_dict):
        return scores[round(float(state_dict["w"][0]), 6)]

    return score


def one_weight(values: dict[str, float]):
    def load(name):
        return {"w": torch.tensor([values[name]]), "n": torch.tensor(int(values[name]))}

    return load


def test_ranking_keeps_config_order_for_ties():
    assert rank_ingredients({"a": 10, "b": 30, "c": 20, "d": 30}, ["a", "b", "c", "d"]) == ["b", "d", "c", "a"]


def test_greedy_starts_from_best_and_keeps_strict_improvements():
    load = one_weight({"a": 6.0, "b": 2.0, "c": 4.0})

    state, steps = greedy_soup(
        order=["a", "b", "c"], heldout_correct={"a": 10, "b": 30, "c": 20}, load=load,
        score=scripted({3.0: 31, 4.0: 31}),
    )  # fmt: skip

    assert [step.ingredient for step in steps] == ["b", "c", "a"]
    assert [step.accepted for step in steps] == [True, True, False]
    assert [step.candidate_correct for step in steps] == [30, 31, 31]
    assert [step.best_correct for step in steps] == [30, 31, 31]
    assert torch.equal(state["w"], torch.tensor([3.0]))
    # The integer buffer comes from the best ingredient, which started the soup.
    assert torch.equal(state["n"], torch.tensor(2))


def test_greedy_rejects_ingredient_that_ties():
    load = one_weight({"a": 2.0, "b": 4.0})

    state, steps = greedy_soup(order=["a", "b"], heldout_correct={"a": 30, "b": 29}, load=load, score=scripted({3.0: 30}))

    assert [step.accepted for step in steps] == [True, False]
    assert steps[1].soup_size == 1
    assert torch.equal(state["w"], torch.tensor([2.0]))


def test_greedy_keeps_weaker_improving_ingredient():
    load = one_weight({"a": 2.0, "b": 4.0, "c": 8.0})

    state, steps = greedy_soup(
        order=["a", "b", "c"], heldout_correct={"a": 30, "b": 20, "c": 5}, load=load,
        score=scripted({3.0: 29, 5.0: 31}),
    )  # fmt: skip

    assert [step.accepted for step in steps] == [True, False, True]
    assert torch.equal(state["w"], torch.tensor([5.0]))


def test_greedy_without_scores_for_all_ingredients_is_rejected():
    with pytest.raises(ValueError, match=r"no held-out score for ingredient\(s\) \['b'\]"):
        greedy_soup(order=["a", "b"], heldout_correct={"a": 1}, load=one_weight({"a": 1.0}), score=scripted({}))


# ------------------------------------------------------------------- fine-tuning, real


@pytest.fixture
def lite0_split(tmp_path, sample_dir) -> tuple[Path, Path]:
    """Eight sample images as a one-shard manifest."""
    images = tmp_path / "images"
    images.mkdir()
    for source in sorted(sample_dir.iterdir())[5::60][:8]:
        (images / source.name).symlink_to(source)
    manifest = tmp_path / "split.parquet"
    write_manifest(build_manifest(root=images, layout="synset-files", num_shards=1), manifest,
                   layout="synset-files", num_shards=1)  # fmt: skip
    return manifest, images


def run_finetune(lite0_checkpoint, lite0_split, folder: Path, settings: FinetuneSettings) -> tuple[dict, dict]:
    checkpoint, provenance = lite0_checkpoint
    manifest, images = lite0_split
    record = finetune_checkpoint(
        name="demo.tuned", base_model="efficientnet_lite0", base_checkpoint=checkpoint, base_provenance=provenance,
        architecture="tf_efficientnet_lite0", pretrained_cfg=None, preprocessing=None, split_manifest=manifest,
        dataset_root=images, settings=settings, threads=1, output=folder / "tuned.safetensors",
        provenance_output=folder / "tuned.json",
    )  # fmt: skip
    return record, load_file(str(folder / "tuned.safetensors"))


def test_classifier_finetune_changes_only_the_head(tmp_path, lite0_checkpoint, lite0_split):
    settings = FinetuneSettings(lr=1e-2, epochs=1, seed=0, batch_size=4)

    record, tuned = run_finetune(lite0_checkpoint, lite0_split, tmp_path, settings)

    base = load_file(str(lite0_checkpoint[0]))
    changed = sorted(key for key in base if not torch.equal(base[key], tuned[key]))
    assert changed == ["classifier.bias", "classifier.weight"]
    assert record["trainable_tensors"] == ["classifier.weight", "classifier.bias"]
    assert record["history"][0]["images"] == 8
    assert record["split"]["images"] == 8
    assert json.loads((tmp_path / "tuned.json").read_text())["safetensors_sha256"] == record["safetensors_sha256"]


def test_finetune_is_deterministic_per_seed(tmp_path, lite0_checkpoint, lite0_split):
    settings = FinetuneSettings(lr=1e-3, epochs=1, seed=3, train="last_block", augmentation="random_resized_crop", batch_size=4)
    results = []
    for run, seed in enumerate((3, 3, 4)):
        folder = tmp_path / f"run{run}"
        folder.mkdir()
        results.append(run_finetune(lite0_checkpoint, lite0_split, folder, FinetuneSettings(**{**settings.__dict__, "seed": seed})))

    (first, first_tensors), (second, second_tensors), (_, other_tensors) = results
    assert first["safetensors_sha256"] == second["safetensors_sha256"]
    assert not torch.equal(first_tensors["classifier.weight"], other_tensors["classifier.weight"])
    assert not torch.equal(first_tensors["blocks.6.0.conv_pw.weight"], load_file(str(lite0_checkpoint[0]))["blocks.6.0.conv_pw.weight"])


def test_last_block_selects_block_and_head(lite0_model):
    names = trainable_names(lite0_model, "last_block")

    assert names[0].startswith("blocks.6.")
    assert names[-2:] == ["classifier.weight", "classifier.bias"]
    assert "conv_head.weight" in names
    assert not any(name.startswith("blocks.5.") for name in names)


# ------------------------------------------------------------------ soups of Lite0, real


def test_real_uniform_and_greedy_soups(tmp_path, lite0_checkpoint, lite0_split):
    checkpoint, provenance = lite0_checkpoint
    manifest, images = lite0_split
    base = load_file(str(checkpoint))
    tuned_path = tmp_path / "tuned.safetensors"
    run_finetune(lite0_checkpoint, lite0_split, tmp_path, FinetuneSettings(lr=5e-2, epochs=1, seed=0, batch_size=4))
    config = soup_config(ingredients={"pretrained": {"model": "lite0"}, "tuned": {"model": "lite0"}})
    del config["soups"]["demo"]["finetune"]
    soup = validate_soups(config)["demo"]
    files = {"pretrained": checkpoint, "tuned": tuned_path}
    scorer = HeldoutScorer(template=checkpoint, architecture="tf_efficientnet_lite0", pretrained_cfg=None,
                           preprocessing={}, manifest=manifest, root=images,
                           evaluation=config["evaluation"], threads=1)  # fmt: skip

    uniform = build_uniform_soup(soup=soup, files=files, scorer=scorer, splits={"note": "test"},
                                 output=tmp_path / "uniform.safetensors", provenance_output=tmp_path / "uniform.json")  # fmt: skip
    greedy = build_greedy_soup(soup=soup, files=files, heldout_correct={"pretrained": 8, "tuned": 1}, heldout_images=8,
                               scorer=scorer, splits={}, output=tmp_path / "greedy.safetensors",
                               provenance_output=tmp_path / "greedy.json", steps_output=tmp_path / "steps.parquet")  # fmt: skip

    averaged = load_file(str(tmp_path / "uniform.safetensors"))
    tuned = load_file(str(tuned_path))
    expected = ((base["classifier.weight"].double() + tuned["classifier.weight"].double()) / 2).float()
    assert torch.equal(averaged["classifier.weight"], expected)
    assert torch.equal(averaged["conv_stem.weight"], base["conv_stem.weight"])
    assert uniform["order"] == ["pretrained", "tuned"]
    assert uniform["heldout_images"] == 8
    assert [entry["sha256"] for entry in uniform["ingredients"]] == [provenance["safetensors_sha256"], greedy["ingredients"][1]["sha256"]]
    # The pretrained model starts the greedy soup with 8 of 8 correct, which no mean can beat.
    assert greedy["used"] == ["pretrained"]
    assert greedy["steps"][1]["accepted"] is False
    assert torch.equal(load_file(str(tmp_path / "greedy.safetensors"))["classifier.weight"], base["classifier.weight"])
    steps = pl.read_parquet(tmp_path / "steps.parquet")
    assert steps["ingredient"].to_list() == ["pretrained", "tuned"]
    assert steps["ingredient_top1"].to_list() == [100.0, 12.5]


def test_heldout_scores_must_cover_the_same_images(tmp_path):
    for name, rows in (("a", 3), ("b", 4)):
        pl.DataFrame({"image_id": [str(index) for index in range(rows)], "correct_top1": [True] * rows}).write_parquet(tmp_path / f"{name}.parquet")

    with pytest.raises(DatasetError, match="different numbers of images"):
        read_heldout_correct({"a": tmp_path / "a.parquet", "b": tmp_path / "b.parquet"})


# ----------------------------------------------------------------- workflow, real (slow)


@pytest.mark.slow
def test_workflow_builds_and_evaluates_soups(tmp_path, sample_dir):
    from workflow_runner import LITE0, planned_jobs, small_config, snakemake, write_config

    if 'include: "workflow/rules/soups.smk"' not in (REPO / "Snakefile").read_text():
        pytest.skip("the Snakefile does not include workflow/rules/soups.smk")
    images = tmp_path / "images"
    images.mkdir()
    for source in sorted(sample_dir.iterdir())[::12]:
        (images / source.name).symlink_to(source)
    config = small_config(images, shards=2, models={"efficientnet_lite0": LITE0})
    config["soups"] = {
        "demo": {
            "architecture": "tf_efficientnet_lite0",
            "evaluation": {"dataset": "sample"},
            "finetune": {"fraction": 0.3},
            "heldout": {"fraction": 0.3},
            "ingredients": {
                "pretrained": {"model": "efficientnet_lite0"},
                "head": {"finetune": {"from": "efficientnet_lite0", "lr": 1.0e-2, "epochs": 1, "seed": 0}},
            },
        }
    }
    write_config(tmp_path, config)

    snakemake(tmp_path, "--cores", "2")

    leaderboard = pl.read_parquet(tmp_path / "results" / "leaderboard.parquet")
    soup_rows = leaderboard.filter(pl.col("dataset") == "demo.evaluation")
    assert sorted(soup_rows["model"]) == ["demo.greedy", "demo.head", "demo.uniform", "efficientnet_lite0"]
    assert leaderboard.filter(pl.col("dataset") == "sample")["model"].to_list() == ["efficientnet_lite0"]
    splits = json.loads((tmp_path / "results" / "soups" / "demo" / "splits.json").read_text())
    assert soup_rows["images"].unique().to_list() == [splits["splits"]["evaluation"]["images"]]
    greedy = json.loads((tmp_path / "results" / "checkpoints" / "demo.greedy.json").read_text())
    assert greedy["used"][0] == greedy["order"][0]
    assert (tmp_path / "results" / "figures" / "soup-demo.png").stat().st_size > 0
    assert planned_jobs(tmp_path) == {}
