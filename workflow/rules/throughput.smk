# Throughput: images per second, batch latency and peak memory of every model under
# every setting of config["throughput"] (one job each), after a pre-flight check that
# the setting predicts the same top-1 as float32; and top-1 against images per second.

from imagebench import throughput as ib_throughput

THROUGHPUT_SETTINGS = ib_throughput.throughput_settings(config)


wildcard_constraints:
    setting=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


rule measure_throughput:
    input:
        unpack(lambda wildcards: ib_throughput.throughput_inputs(config, wildcards.model)),
    output:
        measurement="results/throughput/{model}/{setting}.parquet",
    log:
        "results/logs/measure_throughput/{model}/{setting}.log",
    params:
        setting=lambda wildcards: THROUGHPUT_SETTINGS[wildcards.setting],
        options=ib_throughput.timing_options(config),
        dataset=ib_throughput.throughput_dataset(config),
        dataset_root=ib_throughput.throughput_dataset_root(config),
        architecture=lambda wildcards: get_model(wildcards)["architecture"],
        pretrained_cfg=lambda wildcards: get_model(wildcards).get("pretrained_cfg"),
        preprocessing=lambda wildcards: get_model(wildcards).get("preprocessing", {}),
    # The job reserves the cores its setting uses, a GPU for a CUDA setting, and every
    # host_share, so that no evaluation or training job runs on the machine while it is timed.
    threads: lambda wildcards: THROUGHPUT_SETTINGS[wildcards.setting]["threads"]
    resources:
        host_share=ib.HOST_SHARES,
        gpu=lambda wildcards: ib_throughput.setting_gpus(THROUGHPUT_SETTINGS[wildcards.setting]),
    script:
        "../scripts/measure_throughput.py"


rule plot_pareto:
    input:
        leaderboard="results/leaderboard.parquet",
    output:
        png=report(
            "results/figures/accuracy_vs_throughput.png",
            caption="../report/throughput_pareto.rst",
            category="Throughput",
        ),
        svg="results/figures/accuracy_vs_throughput.svg",
    log:
        "results/logs/plot_pareto.log",
    params:
        figures=config["figures"],
    localrule: True
    script:
        "../scripts/plot_pareto.py"
