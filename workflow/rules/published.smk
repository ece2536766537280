# Published results beside measured ones: the leaderboard with the published top-1 and top-5
# of the same model on the same data, and a figure of measured and published accuracies.

from imagebench import published as ib_published


rule compare_published:
    input:
        leaderboard="results/leaderboard.parquet",
        published=ib_published.published_table(config),
    output:
        parquet="results/published/comparison.parquet",
        csv=report(
            "results/published/comparison.csv",
            caption="../report/published_comparison.rst",
            category="Leaderboard",
        ),
    log:
        "results/logs/compare_published.log",
    params:
        mapping=ib_published.published_mapping(config),
        datasets=ib_published.published_datasets(config),
    localrule: True
    script:
        "../scripts/published_compare.py"


rule plot_published:
    input:
        leaderboard="results/leaderboard.parquet",
        published=ib_published.published_table(config),
    output:
        png=report(
            "results/figures/published.png",
            caption="../report/published.rst",
            category="Accuracy",
        ),
        svg="results/figures/published.svg",
    log:
        "results/logs/plot_published.log",
    params:
        figures=config["figures"],
    localrule: True
    script:
        "../scripts/published_plot.py"
