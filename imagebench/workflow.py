"""Helpers that the Snakemake rules call to turn the config into paths and parameters.

This module is imported when Snakemake parses the workflow, so it must stay
cheap: it does not import torch, timm or polars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

RESULTS = Path("results")
# The machine that runs Snakemake counts as this many shares of the resource host_share
# (profiles/default sets the limit). Jobs that compute take one share and a throughput
# measurement takes all of them, so it is timed with no other such job beside it.
HOST_SHARES = 100


def dataset_names(config: dict[str, Any]) -> list[str]:
    return list(config["datasets"])


def model_names(config: dict[str, Any]) -> list[str]:
    return list(config["models"])


def num_shards(config: dict[str, Any], dataset: str) -> int:
    return int(config["datasets"][dataset].get("shards", 1))


def dataset_root(config: dict[str, Any], dataset: str) -> str:
    """Return the folder that contains ``dataset``'s images.

    Order of precedence: the dataset's own ``root``; for the first dataset,
    the top-level ``dataset_root`` (set with ``--config dataset_root=PATH``);
    otherwise the folder that the dataset's ``source`` is fetched into.
    """
    entry = config["datasets"][dataset]
    if entry.get("root"):
        return str(entry["root"])
    if dataset == dataset_names(config)[0] and config.get("dataset_root"):
        return str(config["dataset_root"])
    subdir = entry.get("source", {}).get("subdir")
    return str(fetched_source_path(dataset) / subdir) if subdir else str(fetched_source_path(dataset))


def is_fetched(config: dict[str, Any], dataset: str) -> bool:
    return dataset_root(config, dataset).startswith(str(fetched_source_path(dataset)))


def fetched_source_path(dataset: str) -> Path:
    return RESULTS / "datasets" / dataset / "source"


def manifest_path(dataset: str) -> Path:
    return RESULTS / "datasets" / dataset / "manifest.parquet"


def checkpoint_path(model: str) -> Path:
    return RESULTS / "checkpoints" / f"{model}.safetensors"


def provenance_path(model: str) -> Path:
    return RESULTS / "checkpoints" / f"{model}.json"


def evaluations(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return every evaluation to run, by name: the model it uses and its preprocessing overrides.

    Each model is evaluated once as configured, under its own name. A model
    with ``test_resolutions`` adds one evaluation per resolution (and per
    ``crop_pcts`` entry), named ``<model>@<resolution>`` or
    ``<model>@<resolution>-crop<crop_pct>``: the test-resolution sweep that
    shows the FixRes effect.
    """
    result = {}
    for model, entry in config["models"].items():
        overrides = dict(entry.get("preprocessing", {}))
        result[model] = {"model": model, "preprocessing": overrides, "sweep": False}
        for resolution in entry.get("test_resolutions", []):
            for crop_pct in entry.get("crop_pcts", [None]):
                name = f"{model}@{resolution}" + ("" if crop_pct is None else f"-crop{crop_pct:g}")
                variant = {**overrides, "img_size": int(resolution)}
                if crop_pct is not None:
                    variant["crop_pct"] = float(crop_pct)
                result[name] = {"model": model, "preprocessing": variant, "sweep": True}
    return result


def swept_models(config: dict[str, Any]) -> list[str]:
    return [model for model, entry in config["models"].items() if entry.get("test_resolutions")]


def shard_paths(config: dict[str, Any], dataset: str, evaluation: str) -> list[Path]:
    shards = num_shards(config, dataset)
    return [
        RESULTS / "predictions" / dataset / evaluation / f"shard-{shard}-of-{shards}.parquet"
        for shard in range(shards)
    ]


def evaluation_pairs(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Return the (dataset, evaluation) pairs to run.

    Every configured dataset is paired with every evaluation of a configured model. Soup
    models and soup evaluation datasets (entries with a ``soup:`` key) are paired only as
    ``imagebench.soups.soup_evaluations`` returns them, so that a soup is never scored on the images
    that selected or trained its ingredients.
    """
    from imagebench.soups import soup_evaluations

    datasets = [name for name, entry in config["datasets"].items() if "soup" not in entry]
    plain = [
        name for name, evaluation in evaluations(config).items() if "soup" not in config["models"][evaluation["model"]]
    ]
    return [(dataset, evaluation) for dataset in datasets for evaluation in plain] + soup_evaluations(config)


def all_prediction_paths(config: dict[str, Any]) -> list[Path]:
    return [
        path
        for dataset, evaluation in evaluation_pairs(config)
        for path in shard_paths(config, dataset, evaluation)
    ]


def evaluation_gpus(config: dict[str, Any]) -> int:
    """Return 1 when evaluation jobs will use a GPU, for the ``gpu`` resource.

    'auto' is decided on the machine that builds the DAG by the presence of an
    NVIDIA driver, without importing torch. On a cluster whose head node has no
    GPU, set ``evaluation.device: cuda`` so that jobs request one.
    """
    device = config["evaluation"]["device"]
    if device.startswith("cuda"):
        return 1
    if device == "auto":
        gpus = Path("/proc/driver/nvidia/gpus")
        return int(gpus.is_dir() and any(gpus.iterdir()))
    return 0
