"""Model soups: weight averages of fine-tuned checkpoints of one architecture (Wortsman et al. 2022).

A ``soups:`` entry of the config names the ingredients, a held-out split that ranks and
selects them, and the evaluation split that the soups are scored on. Two recipes:

- uniform: the mean of all ingredients;
- greedy: rank the ingredients by held-out top-1, start from the best, and add each next one
  to the running mean only when the held-out top-1 of the mean STRICTLY increases.

Floating-point tensors are averaged in float64 and cast back to the first ingredient's
dtype. Integer buffers such as ``num_batches_tracked`` are copied from the first ingredient,
which for the greedy soup is the best one.

Splits are drawn by a salted sha256 of each image id, so an image keeps its split when
images are added to a dataset. For each dataset, the fine-tuning split takes the hash
interval [0, f), the held-out split the next interval, and, on the evaluation dataset, the
evaluation split takes the rest. Every split is written as a manifest, and the split job
rejects any two splits that share an image id or an image file.

Each soup becomes a model ``<soup>.<recipe>`` with a checkpoint in results/checkpoints, and
its evaluation split a dataset ``<soup>.evaluation``, so the evaluation rules score them like
any other model. Fine-tuned and downloaded ingredients become models ``<soup>.<ingredient>``.

Snakemake imports this module while it parses the workflow, so torch, timm and polars are
imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagebench.errors import CheckpointError, ConfigError, DatasetError
from imagebench.workflow import RESULTS, checkpoint_path, dataset_root, manifest_path, num_shards

if TYPE_CHECKING:
    import polars as pl
    import torch
    from plotnine import ggplot

_LOGGER = logging.getLogger(__name__)

RECIPES = ("uniform", "greedy")
INGREDIENT_KINDS = ("model", "finetune", "weights")
DEFAULT_SALT = "imagebench-soups"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_SOUP_KEYS = frozenset({
    "architecture", "pretrained_cfg", "preprocessing", "evaluation", "heldout", "finetune",
    "split_salt", "recipes", "evaluate_ingredients", "ingredients", "published_as",
})  # fmt: skip


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class SplitSpec:
    """A split of ``dataset``: the images whose hash position lies in [start, stop)."""

    name: str
    dataset: str
    start: float
    stop: float


@dataclass(frozen=True)
class IngredientSpec:
    """One ingredient; ``member`` is the model name its checkpoint is evaluated under."""

    name: str
    kind: str
    member: str
    weights_format: str
    model: str | None = None
    finetune: dict[str, Any] | None = None
    weights: dict[str, Any] | None = None


@dataclass(frozen=True)
class SoupSpec:
    name: str
    architecture: str
    pretrained_cfg: str | None
    preprocessing: dict[str, Any]
    salt: str
    splits: dict[str, SplitSpec]
    ingredients: tuple[IngredientSpec, ...]
    recipes: tuple[str, ...]
    evaluate_ingredients: bool
    # {recipe or ingredient name: model of the published-results table}
    published_as: dict[str, str] | None = None

    def model_name(self, recipe: str) -> str:
        return f"{self.name}.{recipe}"

    @property
    def evaluation_dataset(self) -> str:
        return f"{self.name}.evaluation"

    def ingredient(self, name: str) -> IngredientSpec:
        for ingredient in self.ingredients:
            if ingredient.name == name:
                return ingredient
        raise KeyError(name)


def validate_soups(config: dict[str, Any]) -> dict[str, SoupSpec]:
    """Check the ``soups:`` section against the rest of the config and return it parsed.

    Raises ConfigError listing every invalid field with its value and what is allowed. It
    runs when Snakemake parses the workflow, so it rejects these before any job runs: unknown
    keys, ingredients of another architecture than the soup, an unknown model or dataset,
    split fractions that overlap or leave nothing, and names that collide with configured ones.
    """
    section = config.get("soups") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"invalid configuration:\n- soups: {section!r} must be a mapping of soup names to soups")

    # Entries that add_soup_entries derived from the soups are not inputs to them.
    plain = {
        **config,
        "models": {name: config["models"][name] for name in plain_model_names(config)},
        "datasets": {name: config["datasets"][name] for name in plain_dataset_names(config)},
    }
    soups, problems = {}, []
    for name, entry in section.items():
        try:
            soups[name] = _parse_soup(name, entry, plain)
        except ConfigError as error:
            problems.extend(str(error).splitlines())
    problems.extend(_name_collisions(soups, plain))
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(problems))
    return soups


def _parse_soup(name: str, entry: Any, config: dict[str, Any]) -> SoupSpec:
    where = f"soups.{name}"
    problems: list[str] = []
    if not _NAME.match(str(name)):
        raise ConfigError(f"- {where}: the name must match {_NAME.pattern} (no dots, which separate soup and recipe)")
    if not isinstance(entry, dict):
        raise ConfigError(f"- {where}: {entry!r} must be a mapping")
    unknown = sorted(set(entry) - _SOUP_KEYS)
    if unknown:
        problems.append(f"- {where}: unknown key(s) {unknown}; allowed keys are {', '.join(sorted(_SOUP_KEYS))}")
    architecture = entry.get("architecture")
    if not isinstance(architecture, str) or not architecture:
        problems.append(f"- {where}.architecture: {architecture!r}; give the timm architecture of every ingredient")

    recipes = entry.get("recipes", list(RECIPES))
    if (
        not isinstance(recipes, list) or not recipes or len(set(recipes)) != len(recipes)
        or any(recipe not in RECIPES for recipe in recipes)
    ):  # fmt: skip
        problems.append(f"- {where}.recipes: {recipes!r} is not allowed; use a non-empty list of {', '.join(RECIPES)}")
        recipes = list(RECIPES)
    recipes = tuple(recipes)
    preprocessing = entry.get("preprocessing", {})
    if not isinstance(preprocessing, dict):
        problems.append(f"- {where}.preprocessing: {preprocessing!r} must be a mapping like a model's preprocessing")
    evaluate_ingredients = entry.get("evaluate_ingredients", True)
    if not isinstance(evaluate_ingredients, bool):
        problems.append(f"- {where}.evaluate_ingredients: {evaluate_ingredients!r} must be true or false")
    salt = entry.get("split_salt", DEFAULT_SALT)
    if not isinstance(salt, str) or not salt:
        problems.append(f"- {where}.split_salt: {salt!r} must be a non-empty string")

    splits = _parse_splits(where, entry, config, problems)
    ingredients = _parse_ingredients(where, entry.get("ingredients"), architecture, config, problems)
    if any(ingredient.kind == "finetune" for ingredient in ingredients) and "finetune" not in entry:
        problems.append(f"- {where}.finetune: missing; ingredients that fine-tune need a finetune split to train on")
    published_as = _parse_published_as(where, entry.get("published_as"), recipes, ingredients, problems)
    if problems:
        raise ConfigError("\n".join(problems))

    pretrained_cfg, preprocessing = _preprocessing(entry, ingredients, config)
    return SoupSpec(
        name=name, architecture=architecture, pretrained_cfg=pretrained_cfg, preprocessing=preprocessing,
        salt=salt, splits=splits, ingredients=tuple(ingredients), recipes=recipes,
        evaluate_ingredients=evaluate_ingredients, published_as=published_as,
    )  # fmt: skip


def _parse_splits(where: str, entry: dict[str, Any], config: dict[str, Any], problems: list[str]) -> dict[str, SplitSpec]:
    datasets = config.get("datasets", {})
    evaluation = entry.get("evaluation")
    if not isinstance(evaluation, dict) or set(evaluation) != {"dataset"}:
        problems.append(f"- {where}.evaluation: {evaluation!r}; write {{dataset: NAME}} with a configured dataset")
        return {}
    evaluation_dataset = evaluation["dataset"]
    if evaluation_dataset not in datasets:
        problems.append(f"- {where}.evaluation.dataset: {evaluation_dataset!r} is not a configured dataset; "
                        f"known: {', '.join(datasets)}")  # fmt: skip
        return {}

    drawn: dict[str, float] = {}
    splits = {}
    for split in ("finetune", "heldout"):
        section = entry.get(split)
        if section is None and split == "finetune":
            continue
        parsed = _parse_fraction(f"{where}.{split}", section, evaluation_dataset, datasets, problems)
        if parsed is None:
            continue
        dataset, fraction = parsed
        start = drawn.get(dataset, 0.0)
        drawn[dataset] = start + fraction
        splits[split] = SplitSpec(name=split, dataset=dataset, start=start, stop=start + fraction)

    for dataset, total in drawn.items():
        if total > 1.0 + 1e-12 or (dataset == evaluation_dataset and total >= 1.0):
            rest = "leave a part for the evaluation split" if dataset == evaluation_dataset else "keep the sum at most 1"
            problems.append(f"- {where}: the fractions drawn from dataset {dataset!r} sum to {total:g}; {rest}")
    start = drawn.get(evaluation_dataset, 0.0)
    splits["evaluation"] = SplitSpec(name="evaluation", dataset=evaluation_dataset, start=start, stop=1.0)
    return splits


def _parse_fraction(
    where: str, section: Any, evaluation_dataset: str, datasets: dict[str, Any], problems: list[str]
) -> tuple[str, float] | None:
    if not isinstance(section, dict) or not set(section) <= {"dataset", "fraction"}:
        problems.append(f"- {where}: {section!r}; write {{fraction: F}} and optionally dataset: NAME")
        return None
    dataset = section.get("dataset", evaluation_dataset)
    if dataset not in datasets:
        problems.append(f"- {where}.dataset: {dataset!r} is not a configured dataset; known: {', '.join(datasets)}")
        return None
    # A split of another dataset takes all of it by default, but one of the evaluation dataset needs a fraction.
    fraction = section.get("fraction", 1.0 if dataset != evaluation_dataset else None)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
        problems.append(f"- {where}.fraction: {fraction!r} is not allowed; use a number in (0, 1]")
        return None
    return dataset, float(fraction)


def _parse_ingredients(
    where: str, section: Any, architecture: Any, config: dict[str, Any], problems: list[str]
) -> list[IngredientSpec]:
    if not isinstance(section, dict) or len(section) < 2:
        problems.append(f"- {where}.ingredients: {section!r}; a soup needs a mapping of at least two ingredients")
        return []
    soup = where.split(".", 1)[1]
    ingredients = []
    for name, entry in section.items():
        ingredient_where = f"{where}.ingredients.{name}"
        if not _NAME.match(str(name)) or name in RECIPES:
            problems.append(f"- {ingredient_where}: the name must match {_NAME.pattern} and not be one of {', '.join(RECIPES)}")
            continue
        ingredient = _parse_ingredient(ingredient_where, soup, name, entry, config, problems)
        if ingredient is not None:
            _check_architecture(ingredient_where, ingredient, architecture, config, problems)
            ingredients.append(ingredient)
    return ingredients


def _parse_ingredient(
    where: str, soup: str, name: str, entry: Any, config: dict[str, Any], problems: list[str]
) -> IngredientSpec | None:
    models = config.get("models", {})
    if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in INGREDIENT_KINDS:
        problems.append(f"- {where}: {entry!r}; use exactly one of the keys {', '.join(INGREDIENT_KINDS)}")
        return None
    kind, value = next(iter(entry.items()))
    member = f"{soup}.{name}"

    if kind == "model":
        if value not in models:
            problems.append(f"- {where}.model: {value!r} is not a configured model; known: {', '.join(models)}")
            return None
        return IngredientSpec(name=name, kind=kind, member=value, weights_format="timm", model=value)

    if kind == "finetune":
        return _parse_finetune(where, name, member, value, models, problems)

    from imagebench.checkpoints.sources import parse_source

    try:
        source = parse_source(model=member, source=value)
    except CheckpointError as error:
        problems.append(f"- {where}.weights: {error}")
        return None
    return IngredientSpec(name=name, kind=kind, member=member, weights_format=source.weights_format, weights=dict(value))


def _parse_finetune(
    where: str, name: str, member: str, value: Any, models: dict[str, Any], problems: list[str]
) -> IngredientSpec | None:
    from imagebench.finetune import FinetuneSettings

    if not isinstance(value, dict) or value.get("from") not in models:
        base = value.get("from") if isinstance(value, dict) else value
        problems.append(f"- {where}.finetune.from: {base!r} is not a configured model; known: {', '.join(models)}")
        return None
    settings = {key: setting for key, setting in value.items() if key != "from"}
    try:
        FinetuneSettings.from_config(settings, field=f"{where}.finetune")
    except (ConfigError, TypeError) as error:
        problems.append(f"- {error}")
        return None
    return IngredientSpec(name=name, kind="finetune", member=member, weights_format="timm", model=value["from"],
                          finetune=settings)  # fmt: skip


def _check_architecture(
    where: str, ingredient: IngredientSpec, architecture: Any, config: dict[str, Any], problems: list[str]
) -> None:
    if ingredient.model is None:
        return
    ingredient_architecture = config["models"][ingredient.model].get("architecture")
    if ingredient_architecture != architecture:
        problems.append(
            f"- {where}: model {ingredient.model!r} has architecture {ingredient_architecture!r}, but the soup's "
            f"architecture is {architecture!r}; weights of different architectures cannot be averaged"
        )


def _parse_published_as(
    where: str, section: Any, recipes: tuple[str, ...], ingredients: list[IngredientSpec], problems: list[str]
) -> dict[str, str] | None:
    if section is None:
        return None
    allowed = [*recipes, *(ingredient.name for ingredient in ingredients if ingredient.kind != "model")]
    if not isinstance(section, dict) or not all(isinstance(value, str) and value for value in section.values()):
        problems.append(f"- {where}.published_as: {section!r}; map recipe or ingredient names to published model names")
        return None
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        problems.append(f"- {where}.published_as: {unknown} are not recipes or non-model ingredients of the soup; "
                        f"allowed: {', '.join(allowed)}")  # fmt: skip
    return dict(section)


def _preprocessing(
    entry: dict[str, Any], ingredients: list[IngredientSpec], config: dict[str, Any]
) -> tuple[str | None, dict[str, Any]]:
    """Return the soup's pretrained_cfg and preprocessing, else those of its first ingredient that names a model."""
    if "pretrained_cfg" in entry or "preprocessing" in entry:
        return entry.get("pretrained_cfg"), dict(entry.get("preprocessing") or {})
    for ingredient in ingredients:
        if ingredient.model is not None:
            model = config["models"][ingredient.model]
            return model.get("pretrained_cfg"), dict(model.get("preprocessing") or {})
    return None, {}


def _name_collisions(soups: dict[str, SoupSpec], config: dict[str, Any]) -> list[str]:
    taken_models = set(config.get("models", {}))
    taken_datasets = set(config.get("datasets", {}))
    problems = []
    for soup in soups.values():
        for name in derived_model_names(soup):
            if name in taken_models:
                problems.append(
                    f"- soups.{soup.name}: the soup's model name {name!r} is already a configured model; rename one"
                )
            taken_models.add(name)
        if soup.evaluation_dataset in taken_datasets:
            problems.append(
                f"- soups.{soup.name}: the dataset name {soup.evaluation_dataset!r} is already configured; rename one"
            )
        taken_datasets.add(soup.evaluation_dataset)
    return problems


# --------------------------------------------------------------------- workflow helpers


def derived_model_names(soup: SoupSpec) -> list[str]:
    """Return the model names a soup adds: its recipes, and its ingredients that are not configured models."""
    names = [soup.model_name(recipe) for recipe in soup.recipes]
    return names + [ingredient.member for ingredient in soup.ingredients if ingredient.kind != "model"]


def name_pattern(names: Sequence[str]) -> str:
    """Return a regex that matches exactly one of ``names``, for wildcard_constraints; it matches nothing when empty."""
    if not names:
        return "(?!)"
    return "(?:" + "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True)) + ")"


def plain_model_names(config: dict[str, Any]) -> list[str]:
    """Return the configured model names, without those that add_soup_entries added."""
    return [name for name, entry in config.get("models", {}).items() if "soup" not in entry]


def plain_dataset_names(config: dict[str, Any]) -> list[str]:
    """Return the configured dataset names, without those that add_soup_entries added."""
    return [name for name, entry in config.get("datasets", {}).items() if "soup" not in entry]


def add_soup_entries(config: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``config`` with the soups' derived models and evaluation datasets added.

    Each added entry has a ``soup:`` key naming its soup, which no configured entry may have.
    A derived model has no ``weights:`` because a soup rule writes its checkpoint. A derived
    dataset has the root, layout and shard count of the dataset it is drawn from, and keeps
    its ``published_dataset`` only when the evaluation split is the whole of that dataset.
    """
    soups = validate_soups(config)
    updated = {**config, "models": dict(config["models"]), "datasets": dict(config["datasets"])}
    for soup in soups.values():
        model_entry = {"architecture": soup.architecture, "soup": soup.name}
        if soup.pretrained_cfg:
            model_entry["pretrained_cfg"] = soup.pretrained_cfg
        if soup.preprocessing:
            model_entry["preprocessing"] = dict(soup.preprocessing)
        for name in derived_model_names(soup):
            updated["models"][name] = dict(model_entry)
        for short_name, published in (soup.published_as or {}).items():
            updated["models"][f"{soup.name}.{short_name}"]["published_as"] = published
        updated["datasets"][soup.evaluation_dataset] = _evaluation_dataset_entry(soup, config)
    return updated


def _evaluation_dataset_entry(soup: SoupSpec, config: dict[str, Any]) -> dict[str, Any]:
    split = soup.splits["evaluation"]
    parent = config["datasets"][split.dataset]
    entry = {
        "layout": parent["layout"],
        "root": dataset_root(config, split.dataset),
        "shards": num_shards(config, split.dataset),
        "soup": soup.name,
    }
    if split.start == 0.0 and parent.get("published_dataset"):
        entry["published_dataset"] = parent["published_dataset"]
    return entry


def soup_evaluations(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Return the (dataset, model) pairs to evaluate: every soup, and with evaluate_ingredients every ingredient."""
    pairs = []
    for soup in validate_soups(config).values():
        models = [soup.model_name(recipe) for recipe in soup.recipes]
        if soup.evaluate_ingredients:
            models += [ingredient.member for ingredient in soup.ingredients]
        pairs.extend((soup.evaluation_dataset, model) for model in models)
    return pairs


def soup_outputs(config: dict[str, Any]) -> list[str]:
    """Return the files ``rule all`` should request for the soups: checkpoints and the greedy-steps figure."""
    outputs = []
    for soup in validate_soups(config).values():
        outputs += [str(checkpoint_path(soup.model_name(recipe))) for recipe in soup.recipes]
        if "greedy" in soup.recipes:
            outputs += [str(soup_figure_path(soup.name, suffix)) for suffix in ("png", "svg")]
    return outputs


def soup_folder(soup: str) -> Path:
    return RESULTS / "soups" / soup


def split_manifest_path(soup: str, split: str) -> Path:
    if split == "evaluation":
        return manifest_path(f"{soup}.evaluation")
    return soup_folder(soup) / f"{split}.parquet"


def heldout_score_path(soup: str, ingredient: str) -> Path:
    return soup_folder(soup) / "heldout" / f"{ingredient}.parquet"


def soup_figure_path(soup: str, suffix: str) -> Path:
    return RESULTS / "figures" / f"soup-{soup}.{suffix}"


def members_of_kind(soups: Mapping[str, SoupSpec], kind: str) -> list[str]:
    return [ingredient.member for soup in soups.values() for ingredient in soup.ingredients if ingredient.kind == kind]


def find_member(soups: Mapping[str, SoupSpec], member: str) -> tuple[SoupSpec, IngredientSpec]:
    soup_name, _, ingredient_name = member.partition(".")
    soup = soups[soup_name]
    return soup, soup.ingredient(ingredient_name)


def averaging_inputs(soup: SoupSpec) -> dict[str, str]:
    """Return {ingredient: converted checkpoint}: the files a soup averages.

    Every adapter maps each source tensor to one timm tensor (see imagebench.checkpoints.adapters),
    so averaging converted checkpoints equals converting averaged raw files.
    """
    return {ingredient.name: str(checkpoint_path(ingredient.member)) for ingredient in soup.ingredients}


def split_sources(soup: SoupSpec, config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return, per split, what the split job needs: dataset, hash interval, root, layout and shard count."""
    sources = {}
    for name, split in soup.splits.items():
        sources[name] = {
            "dataset": split.dataset,
            "start": split.start,
            "stop": split.stop,
            "root": dataset_root(config, split.dataset),
            "shards": num_shards(config, split.dataset) if name == "evaluation" else 1,
        }
    return sources


# ------------------------------------------------------------------------------ splits


def hash_positions(image_ids: Sequence[str], *, salt: str) -> list[float]:
    """Return each image id's position in [0, 1): the first 8 bytes of sha256(salt NUL image_id) over 2**64."""
    positions = []
    for image_id in image_ids:
        digest = hashlib.sha256(f"{salt}\x00{image_id}".encode()).digest()
        positions.append(int.from_bytes(digest[:8], "big") / 2**64)
    return positions


def select_split(manifest: pl.DataFrame, *, salt: str, start: float, stop: float, shards: int) -> pl.DataFrame:
    """Return the manifest rows whose hash position lies in [start, stop), re-sharded round-robin in path order."""
    import polars as pl

    positions = pl.Series("position", hash_positions(manifest["image_id"].to_list(), salt=salt), dtype=pl.Float64)
    inside = (positions >= start) & (positions < stop)
    selected = manifest.filter(inside).sort("path")
    return selected.with_columns((pl.int_range(pl.len()) % shards).cast(pl.Int32).alias("shard"))


def check_disjoint(frames: Mapping[str, tuple[pl.DataFrame, Path]]) -> None:
    """Raise DatasetError when two splits share an image id or an image file (after resolving symlinks)."""
    names = list(frames)
    for position, first in enumerate(names):
        for second in names[position + 1 :]:
            first_frame, first_root = frames[first]
            second_frame, second_root = frames[second]
            shared_ids = set(first_frame["image_id"].to_list()) & set(second_frame["image_id"].to_list())
            shared_files = _files(first_frame, first_root) & _files(second_frame, second_root)
            if shared_ids or shared_files:
                examples = sorted(shared_ids)[:3] or sorted(shared_files)[:3]
                raise DatasetError(
                    f"the {first} and {second} splits share {len(shared_ids)} image ids and {len(shared_files)} files "
                    f"(first: {examples}); a model selected or trained on an image must not be scored on it. "
                    "Take the held-out or fine-tuning split from a dataset without those images, or as a fraction "
                    "of the evaluation dataset."
                )


def _files(frame: pl.DataFrame, root: Path) -> set[str]:
    return {str((root / path).resolve()) for path in frame["path"].to_list()}


def write_splits(
    *,
    soup: str,
    salt: str,
    sources: Mapping[str, Mapping[str, Any]],
    manifests: Mapping[str, Path],
    outputs: Mapping[str, Path],
    record_output: Path,
) -> dict[str, Any]:
    """Draw every split of a soup from its dataset's manifest, check that they are disjoint, and write them.

    ``sources`` is what ``split_sources`` returns, ``manifests`` maps each source dataset to its
    manifest, and ``outputs`` maps the splits to write to their manifest paths. The record
    written to ``record_output`` gives, per split, its dataset, hash interval, image count and
    the sha256 of its sorted image ids.
    """
    from imagebench.datasets.manifest import read_manifest, write_manifest
    from imagebench.io import sha256_file, write_json_atomic

    frames, metadata_by_split = {}, {}
    record = {"soup": soup, "salt": salt, "hash": "sha256(salt NUL image_id)[:8] / 2**64", "splits": {}}
    for name, source in sources.items():
        manifest, metadata = read_manifest(manifests[source["dataset"]])
        frame = select_split(manifest, salt=salt, start=source["start"], stop=source["stop"], shards=source["shards"])
        if frame.height == 0:
            raise DatasetError(
                f"soup {soup!r}: the {name} split of dataset {source['dataset']!r} (hash interval "
                f"[{source['start']:g}, {source['stop']:g}) of {manifest.height} images) is empty; raise its fraction"
            )
        frames[name] = (frame, Path(source["root"]))
        metadata_by_split[name] = metadata
        record["splits"][name] = {
            "dataset": source["dataset"],
            "interval": [source["start"], source["stop"]],
            "images": frame.height,
            "image_ids_sha256": hashlib.sha256("\n".join(sorted(frame["image_id"].to_list())).encode()).hexdigest(),
            "source_manifest_sha256": sha256_file(manifests[source["dataset"]]),
            "manifest": str(split_manifest_path(soup, name)),
        }

    check_disjoint(frames)
    record["disjoint"] = "checked by image id and by resolved file path"
    for name, path in outputs.items():
        frame, _ = frames[name]
        metadata = metadata_by_split[name]
        write_manifest(frame, Path(path), layout=metadata["layout"], num_shards=sources[name]["shards"],
                       class_mask=metadata["class_mask"])  # fmt: skip
    write_json_atomic(record_output, record)
    _LOGGER.info("soup %s splits: %s", soup, {name: split["images"] for name, split in record["splits"].items()})
    return record


# --------------------------------------------------------------------------- averaging


class RunningAverage:
    """A running float64 sum of state dicts with the same keys and shapes, and the first one's integer buffers."""

    def __init__(self) -> None:
        self.count = 0
        self.names: list[str] = []
        self._sums: dict[str, torch.Tensor] = {}
        self._reference: dict[str, torch.Tensor] = {}

    def add(self, state_dict: Mapping[str, torch.Tensor], *, name: str) -> None:
        """Add ``state_dict`` (ingredient ``name``) to the sum; raise CheckpointError when it does not fit the first."""
        if self.count == 0:
            self._reference = {key: tensor.detach().clone() for key, tensor in state_dict.items()}
            self._sums = {key: tensor.detach().double() for key, tensor in state_dict.items() if tensor.is_floating_point()}
        else:
            self._check(state_dict, name=name)
            for key in self._sums:
                self._sums[key] += state_dict[key].detach().double()
        self.count += 1
        self.names.append(name)

    def with_added(self, state_dict: Mapping[str, torch.Tensor], *, name: str) -> RunningAverage:
        """Return a copy with ``state_dict`` added, leaving this one unchanged."""
        copy = RunningAverage()
        copy.count, copy.names = self.count, list(self.names)
        copy._reference = self._reference
        copy._sums = {key: tensor.clone() for key, tensor in self._sums.items()}
        copy.add(state_dict, name=name)
        return copy

    def mean(self) -> dict[str, torch.Tensor]:
        """Return the mean: float tensors cast back to the first ingredient's dtype, other tensors copied from it."""
        if self.count == 0:
            raise ValueError("the average of no state dicts is undefined; add at least one")
        averaged = {}
        for key, tensor in self._reference.items():
            if key in self._sums:
                averaged[key] = (self._sums[key] / self.count).to(tensor.dtype)
            else:
                averaged[key] = tensor.clone()
        return averaged

    def _check(self, state_dict: Mapping[str, torch.Tensor], *, name: str) -> None:
        first = self.names[0]
        missing = sorted(set(self._reference) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(self._reference))
        if missing or unexpected:
            raise CheckpointError(
                f"ingredient {name!r} has other keys than {first!r}: missing {missing[:5]}, unexpected {unexpected[:5]}; "
                "only checkpoints of one architecture can be averaged"
            )
        for key, reference in self._reference.items():
            tensor = state_dict[key]
            if tuple(tensor.shape) != tuple(reference.shape) or tensor.is_floating_point() != reference.is_floating_point():
                raise CheckpointError(
                    f"ingredient {name!r}: {key} is {tensor.dtype} {tuple(tensor.shape)} but {reference.dtype} "
                    f"{tuple(reference.shape)} in {first!r}; only checkpoints of one architecture can be averaged"
                )


def average_state_dicts(state_dicts: Sequence[tuple[str, Mapping[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    """Return the uniform mean of the named ``state_dicts``, as RunningAverage computes it."""
    running = RunningAverage()
    for name, state_dict in state_dicts:
        running.add(state_dict, name=name)
    return running.mean()


# ------------------------------------------------------------------------------ greedy


@dataclass(frozen=True)
class GreedyStep:
    """One candidate of the greedy soup; counts are correct top-1 predictions on the held-out split."""

    step: int
    ingredient: str
    ingredient_correct: int
    candidate_correct: int
    accepted: bool
    soup_size: int
    best_correct: int


def rank_ingredients(heldout_correct: Mapping[str, int], order: Sequence[str]) -> list[str]:
    """Return ``order`` sorted by held-out correct count, best first; ties keep their order in ``order``."""
    missing = [name for name in order if name not in heldout_correct]
    if missing:
        raise ValueError(f"no held-out score for ingredient(s) {missing}")
    return sorted(order, key=lambda name: -heldout_correct[name])


def greedy_soup(
    *,
    order: Sequence[str],
    heldout_correct: Mapping[str, int],
    load: Callable[[str], Mapping[str, torch.Tensor]],
    score: Callable[[Mapping[str, torch.Tensor]], int],
) -> tuple[dict[str, torch.Tensor], list[GreedyStep]]:
    """Build the greedy soup and return its state dict and every step.

    ``load(name)`` returns an ingredient's state dict and ``score(state_dict)`` its correct count
    on the held-out split. The best ingredient starts the soup with its own count. Each next
    one is kept only when the mean with it scores STRICTLY more than the soup so far, so an
    ingredient that ties is rejected.
    """
    ranked = rank_ingredients(heldout_correct, order)
    running = RunningAverage()
    running.add(load(ranked[0]), name=ranked[0])
    best = heldout_correct[ranked[0]]
    steps = [GreedyStep(1, ranked[0], best, best, True, 1, best)]
    _LOGGER.info("greedy soup starts from %s (%d correct on the held-out split)", ranked[0], best)

    for position, name in enumerate(ranked[1:], start=2):
        candidate = running.with_added(load(name), name=name)
        correct = score(candidate.mean())
        accepted = correct > best
        if accepted:
            running, best = candidate, correct
        steps.append(GreedyStep(position, name, heldout_correct[name], correct, accepted, running.count, best))
        _LOGGER.info("greedy step %d: %s gives %d correct, %s (best %d)", position, name, correct,
                     "kept" if accepted else "rejected", best)  # fmt: skip
    return running.mean(), steps


def steps_frame(steps: Sequence[GreedyStep], *, images: int) -> pl.DataFrame:
    """Return the greedy steps as a table with held-out top-1 in percent."""
    import polars as pl

    return pl.DataFrame(
        {
            "step": [step.step for step in steps],
            "ingredient": [step.ingredient for step in steps],
            "ingredient_top1": [_percent(step.ingredient_correct, images) for step in steps],
            "candidate_top1": [_percent(step.candidate_correct, images) for step in steps],
            "accepted": [step.accepted for step in steps],
            "soup_size": [step.soup_size for step in steps],
            "best_top1": [_percent(step.best_correct, images) for step in steps],
            "heldout_images": [images] * len(steps),
        },
        schema={"step": pl.Int32, "ingredient": pl.String, "ingredient_top1": pl.Float64, "candidate_top1": pl.Float64,
                "accepted": pl.Boolean, "soup_size": pl.Int32, "best_top1": pl.Float64, "heldout_images": pl.Int64},
    )  # fmt: skip


def _percent(correct: int, images: int) -> float:
    return round(100.0 * correct / images, 3)


# ----------------------------------------------------------------------- soup building


class HeldoutScorer:
    """Scores state dicts on a held-out manifest with the evaluation code of the leaderboard.

    One timm model is built from ``template`` (any timm-keyed checkpoint of the soup's
    architecture) and each state dict is loaded into it strictly.
    """

    def __init__(
        self,
        *,
        template: Path,
        architecture: str,
        pretrained_cfg: str | None,
        preprocessing: dict[str, Any],
        manifest: Path,
        root: Path,
        evaluation: dict[str, Any],
        threads: int,
    ) -> None:
        from imagebench.checkpoints.load import load_model
        from imagebench.evaluate import EvaluationSettings

        self.model = load_model(checkpoint=template, architecture=architecture, pretrained_cfg=pretrained_cfg)
        self.preprocessing = preprocessing
        self.manifest = manifest
        self.root = root
        self.settings = replace(EvaluationSettings.from_config(evaluation), threads=threads)
        self.images = 0

    def correct(self, state_dict: Mapping[str, torch.Tensor], *, label: str) -> int:
        """Return the number of held-out images whose top-1 prediction is right; failed images count as wrong."""
        import tempfile

        from imagebench.evaluate import evaluate_shard

        self.model.load_state_dict(state_dict, strict=True)
        with tempfile.TemporaryDirectory(prefix="imagebench-soup-") as folder:
            predictions = evaluate_shard(
                manifest_path=self.manifest, dataset_root=self.root, shard=0, num_shards=1,
                dataset="heldout", model_name=label, model=self.model, checkpoint_sha256=state_dict_sha256(state_dict),
                output=Path(folder) / "predictions.parquet", settings=self.settings,
                preprocessing_overrides=self.preprocessing,
            )  # fmt: skip
        self.images = predictions.height
        return int(predictions["correct_top1"].sum())


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Return a sha256 over the sorted keys, dtypes, shapes and bytes of ``state_dict``, for tensors held in memory."""
    import torch

    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().contiguous().cpu()
        digest.update(f"{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_ingredient(path: Path) -> dict[str, torch.Tensor]:
    """Read an ingredient's timm-keyed safetensors checkpoint."""
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def save_soup(
    *,
    state_dict: Mapping[str, torch.Tensor],
    output: Path,
    provenance_output: Path,
    record: dict[str, Any],
    model: torch.nn.Module,
) -> dict[str, Any]:
    """Write a soup's timm-keyed state dict as safetensors and its provenance JSON, both atomically.

    ``model`` is the model the soup was scored with; its head spec goes into the checkpoint's
    metadata, and its parameter count into the provenance.
    """
    import safetensors
    import timm
    import torch

    from imagebench.checkpoints.heads import head_of
    from imagebench.checkpoints.load import save_checkpoint
    from imagebench.io import sha256_file, write_json_atomic

    head = head_of(model)
    tensor_count = save_checkpoint(dict(state_dict), output, head=head)
    full = {
        **record,
        "weights_format": "timm",
        "head": head,
        "raw_sha256": None,
        "safetensors_file": Path(output).name,
        "safetensors_sha256": sha256_file(output),
        "safetensors_size_bytes": Path(output).stat().st_size,
        "tensor_count": tensor_count,
        "param_count": sum(parameter.numel() for parameter in model.parameters()),
        "averaging": "float tensors: float64 mean cast back to the first ingredient's dtype; "
        "integer tensors: copied from the first ingredient",
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "safetensors_version": safetensors.__version__,
    }
    write_json_atomic(provenance_output, full)
    _LOGGER.info("wrote soup %s to %s", record.get("model"), output)
    return full


def _ingredient_records(
    soup: SoupSpec, files: Mapping[str, Path], heldout_correct: Mapping[str, int] | None, images: int | None
) -> list[dict[str, Any]]:
    from imagebench.io import sha256_file

    records = []
    for ingredient in soup.ingredients:
        entry = {
            "name": ingredient.name,
            "kind": ingredient.kind,
            "model": ingredient.member,
            "file": str(files[ingredient.name]),
            "sha256": sha256_file(files[ingredient.name]),
        }
        if heldout_correct is not None and images:
            entry["heldout_top1"] = _percent(heldout_correct[ingredient.name], images)
        records.append(entry)
    return records


def build_uniform_soup(
    *, soup: SoupSpec, files: Mapping[str, Path], scorer: HeldoutScorer, splits: dict[str, Any],
    output: Path, provenance_output: Path,
) -> dict[str, Any]:  # fmt: skip
    """Average all ingredients of ``soup`` in config order, score the mean on the held-out split and save it."""
    running = RunningAverage()
    for ingredient in soup.ingredients:
        running.add(load_ingredient(files[ingredient.name]), name=ingredient.name)
    averaged = running.mean()
    correct = scorer.correct(averaged, label=soup.model_name("uniform"))

    record = {
        "model": soup.model_name("uniform"),
        "architecture": soup.architecture,
        "soup": soup.name,
        "recipe": "uniform",
        "ingredients": _ingredient_records(soup, files, None, None),
        "order": running.names,
        "used": running.names,
        "heldout_top1": _percent(correct, scorer.images),
        "heldout_images": scorer.images,
        "splits": splits,
    }
    return save_soup(state_dict=averaged, output=output, provenance_output=provenance_output, record=record,
                     model=scorer.model)  # fmt: skip


def build_greedy_soup(
    *, soup: SoupSpec, files: Mapping[str, Path], heldout_correct: Mapping[str, int], heldout_images: int,
    scorer: HeldoutScorer, splits: dict[str, Any], output: Path, provenance_output: Path, steps_output: Path,
) -> dict[str, Any]:  # fmt: skip
    """Build the greedy soup of ``soup`` on the held-out split, save it, and write its steps as Parquet."""
    from imagebench.io import write_parquet_atomic

    def load(name: str) -> dict[str, torch.Tensor]:
        return load_ingredient(files[name])

    label = soup.model_name("greedy")
    averaged, steps = greedy_soup(
        order=[ingredient.name for ingredient in soup.ingredients],
        heldout_correct=heldout_correct,
        load=load,
        score=lambda state_dict: scorer.correct(state_dict, label=label),
    )
    images = heldout_images
    if scorer.images and scorer.images != images:
        raise DatasetError(
            f"soup {soup.name!r}: the held-out split has {scorer.images} images but the ingredients were scored on "
            f"{images}; rerun the soup_score_ingredient jobs"
        )
    frame = steps_frame(steps, images=images)
    write_parquet_atomic(frame, steps_output)

    record = {
        "model": label,
        "architecture": soup.architecture,
        "soup": soup.name,
        "recipe": "greedy",
        "ingredients": _ingredient_records(soup, files, heldout_correct, images),
        "order": [step.ingredient for step in steps],
        "used": [step.ingredient for step in steps if step.accepted],
        "steps": frame.to_dicts(),
        "heldout_top1": frame["best_top1"][-1],
        "heldout_images": images,
        "acceptance": "an ingredient is kept only when the held-out top-1 of the mean strictly increases",
        "splits": splits,
    }
    return save_soup(state_dict=averaged, output=output, provenance_output=provenance_output, record=record,
                     model=scorer.model)  # fmt: skip


def read_heldout_correct(paths: Mapping[str, Path]) -> tuple[dict[str, int], int]:
    """Return {ingredient: correct top-1 count} from the held-out prediction files, and the image count."""
    import polars as pl

    correct, sizes = {}, set()
    for name, path in paths.items():
        frame = pl.read_parquet(path, columns=["image_id", "correct_top1"])
        correct[name] = int(frame["correct_top1"].sum())
        sizes.add(frame.height)
    if len(sizes) != 1:
        raise DatasetError(f"held-out prediction files cover different numbers of images ({sorted(sizes)}); rerun them")
    return correct, sizes.pop()


# ------------------------------------------------------------------------------ figure


def plot_greedy_steps(steps: pl.DataFrame, *, uniform_top1: float | None) -> ggplot:
    """Held-out top-1 of each greedy candidate, kept or rejected, with the soup's running best and the uniform soup."""
    import polars as pl
    from plotnine import (
        aes, element_text, geom_hline, geom_point, geom_step, geom_text, ggplot, labs,
        scale_colour_manual, scale_shape_manual, scale_x_continuous, theme, theme_bw,
    )  # fmt: skip

    data = steps.with_columns(
        pl.when(pl.col("accepted")).then(pl.lit("kept")).otherwise(pl.lit("rejected")).alias("decision")
    ).to_pandas()
    labels = [f"{step}: {name}" for step, name in zip(steps["step"].to_list(), steps["ingredient"].to_list())]

    plot = (
        ggplot(data, aes(x="step"))
        + geom_step(aes(y="best_top1"), colour="grey", direction="hv")
        + geom_point(aes(y="ingredient_top1"), colour="grey", shape="_", size=4)
        + geom_point(aes(y="candidate_top1", colour="decision", shape="decision"), size=3)
        + scale_colour_manual(values={"kept": "#2ca02c", "rejected": "#d62728"})
        + scale_shape_manual(values={"kept": "o", "rejected": "x"})
        + scale_x_continuous(breaks=steps["step"].to_list(), labels=labels)
        + labs(
            x="ingredient added, in order of its own held-out top-1",
            y="held-out top-1 (%)",
            colour="greedy decision",
            shape="greedy decision",
            caption="grey line: greedy soup so far; grey dashes: ingredient alone",
        )
        + theme_bw()
        + theme(axis_text_x=element_text(rotation=45, ha="right", size=7), legend_position="bottom")
    )
    if uniform_top1 is not None:
        uniform = pl.DataFrame({"top1": [uniform_top1], "label": [f"uniform soup: {uniform_top1:.2f}%"]}).to_pandas()
        plot = (
            plot
            + geom_hline(uniform, aes(yintercept="top1"), linetype="dashed", colour="#1f77b4")
            + geom_text(uniform, aes(x=1, y="top1", label="label"), inherit_aes=False, ha="left", va="bottom",
                        size=7, colour="#1f77b4")  # fmt: skip
        )
    return plot


# ------------------------------------------------------------------------------- steps


def _log_file(snakemake: Any) -> str | None:
    return snakemake.log[0] if len(snakemake.log) else None


def _soup_of(snakemake: Any) -> SoupSpec:
    return validate_soups(snakemake.config)[snakemake.wildcards.soup]


def soup_splits_step(snakemake: Any) -> None:
    """Job of rule soup_splits: the evaluation and held-out manifests, and the split record."""
    from imagebench.steps import logging_to

    with logging_to(_log_file(snakemake)):
        sources = dict(snakemake.params.sources)
        write_splits(
            soup=snakemake.wildcards.soup,
            salt=snakemake.params.salt,
            sources=sources,
            manifests={dataset: Path(path) for dataset, path in dict(snakemake.params.manifests).items()},
            outputs={"evaluation": Path(snakemake.output.evaluation), "heldout": Path(snakemake.output.heldout)},
            record_output=Path(snakemake.output.splits),
        )


def soup_finetune_split_step(snakemake: Any) -> None:
    """Job of rule soup_finetune_split: the fine-tuning manifest, drawn again and checked against the split record."""
    import tempfile

    from imagebench.steps import logging_to

    with logging_to(_log_file(snakemake)):
        recorded = json.loads(Path(snakemake.input.splits).read_text(encoding="utf-8"))
        with tempfile.TemporaryDirectory(dir=Path(snakemake.output.finetune).parent) as folder:
            record = write_splits(
                soup=snakemake.wildcards.soup,
                salt=snakemake.params.salt,
                sources=dict(snakemake.params.sources),
                manifests={dataset: Path(path) for dataset, path in dict(snakemake.params.manifests).items()},
                outputs={"finetune": Path(snakemake.output.finetune)},
                record_output=Path(folder) / "splits.json",
            )
        if record["splits"] != recorded["splits"]:
            raise DatasetError(
                f"the fine-tuning split of soup {snakemake.wildcards.soup!r} differs from {snakemake.input.splits}; "
                "a source manifest changed since the splits were drawn. Rerun with --forcerun soup_splits."
            )


def download_ingredient_step(snakemake: Any) -> None:
    """Job of rule soup_download_ingredient."""
    from imagebench.checkpoints.fetch import fetch_weights
    from imagebench.io import write_json_atomic
    from imagebench.steps import logging_to

    with logging_to(_log_file(snakemake)):
        provenance = fetch_weights(
            model=snakemake.wildcards.member,
            source=dict(snakemake.params.source),
            destination=Path(snakemake.output.weights),
            lock_file=Path(snakemake.params.lock_file),
        )
        write_json_atomic(snakemake.output.provenance, provenance)


def convert_ingredient_step(snakemake: Any) -> None:
    """Job of rule soup_convert_ingredient."""
    from imagebench.checkpoints.convert import convert_checkpoint
    from imagebench.steps import logging_to

    with logging_to(_log_file(snakemake)):
        convert_checkpoint(
            model=snakemake.wildcards.member,
            raw_path=Path(snakemake.input.weights),
            architecture=snakemake.params.architecture,
            weights_format=snakemake.params.weights_format,
            output=Path(snakemake.output.checkpoint),
            provenance=json.loads(Path(snakemake.input.provenance).read_text(encoding="utf-8")),
            provenance_output=Path(snakemake.output.provenance),
        )


def score_ingredient_step(snakemake: Any) -> None:
    """Job of rule soup_score_ingredient: the ingredient's predictions on the held-out split."""
    from imagebench.checkpoints.load import load_model
    from imagebench.evaluate import EvaluationSettings, evaluate_shard
    from imagebench.steps import logging_to

    params = snakemake.params
    with logging_to(_log_file(snakemake)):
        provenance = json.loads(Path(snakemake.input.provenance).read_text(encoding="utf-8"))
        model = load_model(checkpoint=Path(snakemake.input.checkpoint), architecture=params.architecture,
                           pretrained_cfg=params.pretrained_cfg)  # fmt: skip
        settings = replace(EvaluationSettings.from_config(params.evaluation), threads=snakemake.threads)
        evaluate_shard(
            manifest_path=Path(snakemake.input.heldout), dataset_root=Path(params.root), shard=0, num_shards=1,
            dataset=f"{snakemake.wildcards.soup}.heldout", model_name=params.member, model=model,
            checkpoint_sha256=provenance["safetensors_sha256"], output=Path(snakemake.output.predictions),
            settings=settings, preprocessing_overrides=params.preprocessing,
        )  # fmt: skip


def _scorer(snakemake: Any, soup: SoupSpec) -> HeldoutScorer:
    return HeldoutScorer(
        template=Path(snakemake.input.template),
        architecture=soup.architecture,
        pretrained_cfg=soup.pretrained_cfg,
        preprocessing=soup.preprocessing,
        manifest=Path(snakemake.input.heldout),
        root=Path(snakemake.params.heldout_root),
        evaluation=dict(snakemake.params.evaluation),
        threads=snakemake.threads,
    )


def _ingredient_files(snakemake: Any) -> dict[str, Path]:
    return {name: Path(path) for name, path in dict(snakemake.params.files).items()}


def uniform_soup_step(snakemake: Any) -> None:
    """Job of rule soup_uniform."""
    import torch

    from imagebench.steps import logging_to

    with logging_to(_log_file(snakemake)):
        torch.set_num_threads(snakemake.threads)
        soup = _soup_of(snakemake)
        build_uniform_soup(
            soup=soup, files=_ingredient_files(snakemake), scorer=_scorer(snakemake, soup),
            splits=json.loads(Path(snakemake.input.splits).read_text(encoding="utf-8")),
            output=Path(snakemake.output.checkpoint), provenance_output=Path(snakemake.output.provenance),
        )  # fmt: skip


def greedy_soup_step(snakemake: Any) -> None:
    """Job of rule soup_greedy."""
    import torch

    from imagebench.steps import logging_to

    with logging_to(_log_file(snakemake)):
        torch.set_num_threads(snakemake.threads)
        soup = _soup_of(snakemake)
        scores = dict(zip(snakemake.params.ingredients, map(Path, snakemake.input.scores)))
        heldout_correct, heldout_images = read_heldout_correct(scores)
        build_greedy_soup(
            soup=soup, files=_ingredient_files(snakemake), heldout_correct=heldout_correct,
            heldout_images=heldout_images, scorer=_scorer(snakemake, soup),
            splits=json.loads(Path(snakemake.input.splits).read_text(encoding="utf-8")),
            output=Path(snakemake.output.checkpoint), provenance_output=Path(snakemake.output.provenance),
            steps_output=Path(snakemake.output.steps),
        )  # fmt: skip


def plot_soup_step(snakemake: Any) -> None:
    """Job of rule plot_soup: the greedy steps figure as PNG and SVG."""
    import polars as pl

    from imagebench.figures import FigureSettings, save_figure
    from imagebench.steps import logging_to

    with logging_to(_log_file(snakemake)):
        settings = FigureSettings.from_config(snakemake.params.figures)
        uniform = snakemake.input.get("uniform")
        uniform_top1 = json.loads(Path(uniform).read_text(encoding="utf-8"))["heldout_top1"] if uniform else None
        figure = plot_greedy_steps(pl.read_parquet(snakemake.input.steps), uniform_top1=uniform_top1)
        save_figure(figure, Path(snakemake.output.png), settings)
        save_figure(figure, Path(snakemake.output.svg), settings)
