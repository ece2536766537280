# Aggregation: top-1 and top-5 with 95% intervals per (dataset, model), and the
# best measured throughput of each model.

from imagebench import throughput as ib_throughput


rule aggregate:
    input:
        predictions=ib.all_prediction_paths(config),
        manifests=[ib.manifest_path(dataset) for dataset in ib.dataset_names(config)],
        provenances=[ib.provenance_path(entry["model"]) for entry in EVALUATIONS.values()],
        throughput=ib_throughput.throughput_paths(config),
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
    localrule: True
    script:
        "../scripts/aggregate.py"
