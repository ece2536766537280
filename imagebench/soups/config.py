"""The ``soups:`` section of the config: the soups parsed and checked, and what they add to the workflow.

``validate_soups`` runs when Snakemake parses the workflow. The workflow helpers below it add
each soup's models and evaluation dataset to the config (``add_soup_entries``), return the
evaluations and files that ``rule all`` requests, and look up soups and ingredients for the rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imagebench.errors import CheckpointError, ConfigError
from imagebench.soups.paths import soup_figure_path
from imagebench.workflow import checkpoint_path, dataset_root, num_shards

RECIPES = ("uniform", "greedy")
INGREDIENT_KINDS = ("model", "finetune", "weights")
DEFAULT_SALT = "imagebench-soups"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_SOUP_KEYS = frozenset({
    "architecture", "pretrained_cfg", "preprocessing", "evaluation", "heldout", "finetune",
    "split_salt", "recipes", "evaluate_ingredients", "ingredients", "published_as",
})  # fmt: skip


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
    runs when Snakemake parses the workflow, so these errors stop a run before any job. It
    rejects unknown keys, ingredients of another architecture than the soup, an unknown model
    or dataset, split fractions that overlap or leave nothing, and names that collide with
    configured ones.
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


def members_of_kind(soups: Mapping[str, SoupSpec], kind: str) -> list[str]:
    return [ingredient.member for soup in soups.values() for ingredient in soup.ingredients if ingredient.kind == kind]


def find_member(soups: Mapping[str, SoupSpec], member: str) -> tuple[SoupSpec, IngredientSpec]:
    soup_name, _, ingredient_name = member.partition(".")
    soup = soups[soup_name]
    return soup, soup.ingredient(ingredient_name)
