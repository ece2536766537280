# Aggregation: top-1 and top-5 with 95% intervals per (dataset, model), the best
# measured throughput of each model, and the published top-1 and top-5 of the same
# model on the same data.

from imagebench import published as ib_published
from imagebench import throughput as ib_throughput


rule aggregate:
    input:
        predictions=ib.all_prediction_paths(config),
        manifests=[ib.manifest_path(dataset) for dataset in ib.dataset_names(config)],
        provenances=[ib.provenance_path(entry["model"]) for entry in EVALUATIONS.values()],
        throughput=ib_throughput.throughput_paths(config),
        published=ib_published.published_table(config),
    output:
        parquet="results/leaderboard.parquet",
        csv=report(
            "results/leaderboard.csv",
            caption="../report/leaderboard.rst",
            category="Leaderboard",
        ),
        markdown="results/leaderboard.md",
    log:
        "results/logs/aggregate.log",
    params:
        datasets=ib.dataset_names(config),
        evaluations=list(EVALUATIONS),
        published_models=ib_published.published_mapping(config),
        published_datasets=ib_published.published_datasets(config),
    localrule: True
    script:
        "../scripts/aggregate.py"
