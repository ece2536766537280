# Configuration checks and the helpers that the rules share.

from pathlib import Path

from imagebench import workflow as ib
from imagebench.config import check_duplicate_keys, validate_config

for _configfile in workflow.configfiles:
    check_duplicate_keys(_configfile)
config = validate_config(
    config, schema_path=Path(workflow.current_basedir) / ".." / "schemas" / "config.schema.yaml"
)


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    shard=r"\d+",
    shards=r"\d+",


def get_final_outputs():
    return [
        "results/leaderboard.parquet",
        "results/leaderboard.csv",
        "results/leaderboard.md",
        "results/figures/accuracy.png",
        "results/figures/accuracy.svg",
    ]


def get_model(wildcards):
    return config["models"][wildcards.model]


def get_dataset_input(wildcards):
    if ib.is_fetched(config, wildcards.dataset):
        return {"root": str(ib.fetched_source_path(wildcards.dataset))}
    return {}
