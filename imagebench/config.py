"""Validation of the workflow configuration before any job runs.

The JSON schema in ``workflow/schemas/config.schema.yaml`` checks types and
allowed values. Checks the schema cannot express (a timm architecture that
exists, duplicate names in the YAML file, a dataset with neither a root nor a
source) follow it here. Every error names the field, the value and what is
allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.metadata
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml

from imagebench.errors import ConfigError
from imagebench.io import write_text_atomic

_LOGGER = logging.getLogger(__name__)

ARCHITECTURE_CACHE = Path("results") / ".cache"

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"

_Settings = TypeVar("_Settings")


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def validate_config(config: dict[str, Any], *, schema_path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """Return a copy of ``config`` with defaults filled in, or raise ConfigError.

    All schema violations are reported together, one per line, so a user fixes
    a config in one pass rather than one error per run.
    """
    schema = load_schema(schema_path)
    validated = copy.deepcopy(config)

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(validated), key=lambda error: list(error.absolute_path))
    if errors:
        raise ConfigError("invalid configuration:\n" + "\n".join(_describe(error) for error in errors))

    _fill_defaults(validated, schema)
    _check_semantics(validated)
    return validated


def check_duplicate_keys(path: str | Path) -> None:
    """Raise ConfigError when a YAML mapping repeats a key.

    PyYAML, and so Snakemake, keeps the last of two equal keys without a
    warning, which would silently drop a model or dataset from the benchmark.
    """
    with open(path, encoding="utf-8") as handle:
        yaml.load(handle, Loader=_DuplicateKeyLoader)


class _DuplicateKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"duplicate key {key!r} in {key_node.start_mark.name} at line {key_node.start_mark.line + 1} "
                    f"(first at line {seen[key] + 1}); give every model and dataset a unique name"
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _describe(error: jsonschema.ValidationError) -> str:
    field = _field_name(error.absolute_path)
    value = error.instance

    if error.validator == "enum":
        allowed = ", ".join(_yaml_literal(option) for option in error.validator_value)
        return f"- {field}: {value!r} is not allowed; use one of {allowed}"
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        unknown = sorted(set(value) - set(error.schema.get("properties", {})))
        return f"- {field}: unknown key(s) {', '.join(map(repr, unknown))}; allowed keys are {allowed}"
    if error.validator == "required":
        return f"- {field}: {error.message}"
    if error.validator == "oneOf" and list(error.absolute_path)[-1:] == ["sha256"]:
        # YAML reads an unquoted hash of digits only (or digits and one e) as a number.
        quote = "; quote it in the YAML file" if isinstance(value, int | float) else ""
        return f"- {field}: {value!r} is not a sha256; use 64 lowercase hex digits, or 'lock' for a url source{quote}"
    if error.validator == "oneOf" and isinstance(value, dict) and "sha256" not in error.schema_path:
        return f"- {field}: {_describe_weights(value)}"
    if error.validator in {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}:
        return f"- {field}: {value!r} is out of range ({error.validator} is {error.validator_value})"
    if error.validator == "pattern":
        # A schema field may name its allowed values in words (x-allowed), which reads better than the pattern.
        allowed = f"; use {error.schema['x-allowed']}" if "x-allowed" in error.schema else ""
        return f"- {field}: {value!r} does not match the pattern {error.validator_value!r}{allowed}"
    if error.validator == "type":
        return f"- {field}: {value!r} has the wrong type; expected {error.validator_value}"
    return f"- {field}: {error.message}"


def _yaml_literal(value: Any) -> str:
    """Return ``value`` as a YAML config spells it: null and true rather than Python's None and True."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _describe_weights(value: dict[str, Any]) -> str:
    sources = [key for key in ("pypi", "url", "hf_hub", "timm", "file") if key in value]
    if len(sources) != 1:
        return (
            f"weights must name exactly one source among pypi, url, hf_hub, timm and file; got {sources or 'none'}"
        )
    source = sources[0]
    if source == "url" and "sha256" not in value:
        return (
            f"url {value['url']!r} has no sha256; add the file's sha256, "
            "or sha256: lock to record it at the first download"
        )
    if source == "pypi":
        missing = [key for key in ("member", "sha256") if key not in value]
        return f"pypi source {value['pypi']!r} is missing {', '.join(missing)}"
    return f"invalid weights source {value!r}"


def _field_name(path: Any) -> str:
    parts = [str(part) for part in path]
    return ".".join(parts) if parts else "(top level)"


def _fill_defaults(instance: dict[str, Any], schema: dict[str, Any]) -> None:
    for key, subschema in schema.get("properties", {}).items():
        if key not in instance and "default" in subschema:
            instance[key] = copy.deepcopy(subschema["default"])
        if isinstance(instance.get(key), dict) and subschema.get("type") == "object":
            _fill_defaults(instance[key], subschema)

    definitions = schema.get("$defs", {})
    for name, dataset in instance.get("datasets", {}).items():
        _fill_defaults(dataset, definitions.get("dataset", {}))


def check_dataset_roots(config: dict[str, Any]) -> None:
    """Raise ConfigError when a dataset's root, or the top-level dataset_root, is not a folder.

    Kept out of validate_config because it reads the file system. Relative
    paths start at the working directory, where Snakemake parses the workflow.
    """
    problems = []
    for position, (name, dataset) in enumerate(config["datasets"].items()):
        if dataset.get("root"):
            field, root = f"datasets.{name}.root", dataset["root"]
        elif position == 0 and config.get("dataset_root"):
            field, root = "dataset_root", config["dataset_root"]
        else:
            continue
        if not Path(root).is_dir():
            problems.append(
                f"- {field}: {str(root)!r} is not a folder (relative paths start at {Path.cwd()}); "
                f"set it to the folder that holds the images of dataset {name}"
            )
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(problems))


def known_architectures(cache_dir: Path = ARCHITECTURE_CACHE) -> frozenset[str]:
    """Return timm's architecture names, cached per timm version.

    Importing timm takes seconds (it imports torch), and Snakemake validates
    the config on every call, even a dry run, so the list is read from a cache
    file once it exists.
    """
    version = importlib.metadata.version("timm")
    cache = cache_dir / f"timm-{version}-architectures.txt"
    if cache.is_file():
        return frozenset(cache.read_text(encoding="utf-8").split())

    import timm

    names = sorted(timm.list_models())
    try:
        write_text_atomic(cache, "\n".join(names) + "\n")
    except OSError as error:
        _LOGGER.warning("could not cache timm's architecture names in %s: %s", cache, error)
    return frozenset(names)


def _check_semantics(config: dict[str, Any]) -> None:
    architectures = known_architectures()

    problems = []
    for name, model in config["models"].items():
        architecture = model["architecture"]
        if architecture not in architectures:
            problems.append(
                f"- models.{name}.architecture: {architecture!r} is not a timm architecture; "
                "see timm.list_models() for the allowed names"
            )

    dataset_names = list(config["datasets"])
    for position, (name, dataset) in enumerate(config["datasets"].items()):
        has_root = dataset.get("root") or (position == 0 and config.get("dataset_root"))
        if not has_root and not dataset.get("source"):
            problems.append(
                f"- datasets.{name}: no root and no source; set datasets.{name}.root, "
                f"or --config dataset_root=PATH for the first dataset ({dataset_names[0]})"
            )

    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(problems))


def settings_from_section(cls: type[_Settings], section: Mapping[str, Any]) -> _Settings:
    """Build the dataclass ``cls`` from the keys of a config section that name its fields.

    A field whose key is missing keeps its default. Keys that name no field are ignored,
    because a section may contain keys that other code reads, such as throughput's
    ``settings``. The JSON schema has already rejected unknown keys, and each class keeps
    its own range checks.
    """
    names = [field.name for field in dataclasses.fields(cls) if field.init]
    return cls(**{name: section[name] for name in names if name in section})
