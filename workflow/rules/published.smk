# A figure of measured accuracies beside published ones. Rule aggregate adds the published
# top-1 and top-5 of the same model on the same data to the leaderboard itself.

from imagebench import published as ib_published


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
