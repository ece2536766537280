# Figures: drawn from the leaderboard only, so that a figure setting never
# reruns an evaluation.


rule plot_accuracy:
    input:
        leaderboard="results/leaderboard.parquet",
    output:
        png=report(
            "results/figures/accuracy.png",
            caption="../report/accuracy.rst",
            category="Accuracy",
        ),
        svg="results/figures/accuracy.svg",
    log:
        "results/logs/plot_accuracy.log",
    params:
        figures=config["figures"],
    localrule: True
    script:
        "../scripts/plot_accuracy.py"


rule plot_resolution_sweep:
    input:
        leaderboard="results/leaderboard.parquet",
    output:
        png=report(
            "results/figures/resolution/{model}.png",
            caption="../report/resolution_sweep.rst",
            category="Test-resolution sweep",
            subcategory="{model}",
        ),
        svg="results/figures/resolution/{model}.svg",
    log:
        "results/logs/plot_resolution_sweep/{model}.log",
    params:
        figures=config["figures"],
    localrule: True
    script:
        "../scripts/plot_resolution_sweep.py"
