"""Evaluation preprocessing taken from a model's pretrained config, with overrides."""

from __future__ import annotations

import json
from typing import Any

import torch
from timm.data import create_transform, resolve_data_config

# Keys of a timm data config that a user may override in the config file.
OVERRIDABLE_KEYS = ("img_size", "crop_pct", "crop_mode", "interpolation", "mean", "std")


def resolve_preprocessing(model: torch.nn.Module, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return timm's data config for ``model`` with the user's ``overrides`` applied.

    ``img_size`` sets the square test resolution; the other keys replace the
    pretrained config's values one for one.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(OVERRIDABLE_KEYS))
    if unknown:
        raise ValueError(f"unknown preprocessing override(s) {unknown}; allowed: {', '.join(OVERRIDABLE_KEYS)}")

    arguments = {key: value for key, value in overrides.items() if value is not None}
    if "mean" in arguments:
        arguments["mean"] = tuple(arguments["mean"])
    if "std" in arguments:
        arguments["std"] = tuple(arguments["std"])
    return resolve_data_config(args=arguments, model=model)


def build_transform(data_config: dict[str, Any]):
    """Build timm's evaluation transform (resize, center crop, normalise) for ``data_config``."""
    return create_transform(**data_config, is_training=False)


def describe_preprocessing(data_config: dict[str, Any]) -> dict[str, Any]:
    """Return a JSON-ready record of the preprocessing, for file metadata and leaderboard rows."""
    import PIL
    import timm

    channels, height, width = data_config["input_size"]
    return {
        "library": f"timm {timm.__version__}",
        "decoder": f"Pillow {PIL.__version__}",
        "input_size": [channels, height, width],
        "img_size": height,
        "crop_pct": float(data_config["crop_pct"]),
        "crop_mode": data_config.get("crop_mode", "center"),
        "interpolation": data_config["interpolation"],
        "mean": [float(value) for value in data_config["mean"]],
        "std": [float(value) for value in data_config["std"]],
        "channel_order": "RGB",
    }


def preprocessing_json(data_config: dict[str, Any]) -> str:
    return json.dumps(describe_preprocessing(data_config), sort_keys=True)
