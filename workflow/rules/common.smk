# Configuration checks and the helpers that the rules share.

from pathlib import Path

from imagebench import published as ib_published
from imagebench import soups as ib_soups
from imagebench import workflow as ib
from imagebench.config import check_dataset_roots, check_duplicate_keys, validate_config

for _configfile in workflow.configfiles:
    check_duplicate_keys(_configfile)
config = validate_config(
    config, schema_path=Path(workflow.current_basedir) / ".." / "schemas" / "config.schema.yaml"
)
check_dataset_roots(config)
# Adds each soup's models (<soup>.<recipe>, <soup>.<ingredient>) and evaluation dataset.
config = ib_soups.add_soup_entries(config)
ib_published.check_published_config(config)


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    evaluation=r"[A-Za-z0-9][A-Za-z0-9_.-]*(@[0-9]+(-crop[0-9.]+)?)?",
    shard=r"\d+",
    shards=r"\d+",


EVALUATIONS = ib.evaluations(config)


def get_final_outputs():
    # The prediction shards are targets too, so that a deleted shard is rebuilt
    # (and the leaderboard after it) even though the leaderboard still exists.
    return [
        *ib.all_prediction_paths(config),
        "results/leaderboard.parquet",
        "results/leaderboard.csv",
        "results/leaderboard.md",
        "results/figures/accuracy.png",
        "results/figures/accuracy.svg",
        "results/figures/accuracy_vs_throughput.png",
        "results/figures/accuracy_vs_throughput.svg",
        "results/figures/published.png",
        "results/figures/published.svg",
        *ib_soups.soup_outputs(config),
        *[f"results/figures/resolution/{model}.{ext}" for model in ib.swept_models(config) for ext in ("png", "svg")],
    ]


def get_model(wildcards):
    return config["models"][wildcards.model]


def get_evaluation(wildcards):
    return EVALUATIONS[wildcards.evaluation]


def get_evaluation_model(wildcards):
    return config["models"][get_evaluation(wildcards)["model"]]


def get_dataset_input(wildcards):
    if ib.is_fetched(config, wildcards.dataset):
        return {"source": str(ib.fetched_source_path(wildcards.dataset))}
    return {}
