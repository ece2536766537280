# Throughput: images per second, batch latency and peak memory of every model under
# every setting of config["throughput"] (one job each), after a pre-flight check that
# the setting predicts the same top-1 as float32; and top-1 against images per second.

from imagebench import throughput as ib_throughput


wildcard_constraints:
    setting=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def get_throughput_setting(wildcards):
    return ib_throughput.throughput_settings(config)[wildcards.setting]


def get_throughput_input(wildcards):
    inputs = {"checkpoint": str(ib.checkpoint_path(wildcards.model))}
    dataset = ib_throughput.throughput_dataset(config)
    if dataset is not None:
        inputs["manifest"] = str(ib.manifest_path(dataset))
    return inputs


def get_throughput_dataset_root(wildcards):
    dataset = ib_throughput.throughput_dataset(config)
    return ib.dataset_root(config, dataset) if dataset is not None else None


def get_throughput_architecture(wildcards):
    return config["models"][wildcards.model]["architecture"]


def get_throughput_pretrained_cfg(wildcards):
    return config["models"][wildcards.model].get("pretrained_cfg")


def get_throughput_preprocessing(wildcards):
    return config["models"][wildcards.model].get("preprocessing", {})


def get_throughput_threads(wildcards):
    return get_throughput_setting(wildcards)["threads"]


def get_throughput_gpus(wildcards):
    return ib_throughput.setting_gpus(get_throughput_setting(wildcards))


rule measure_throughput:
    input:
        unpack(get_throughput_input),
    output:
        measurement="results/throughput/{model}/{setting}.parquet",
    log:
        "results/logs/measure_throughput/{model}/{setting}.log",
    params:
        setting=get_throughput_setting,
        options=ib_throughput.timing_options(config),
        dataset=ib_throughput.throughput_dataset(config),
        dataset_root=get_throughput_dataset_root,
        architecture=get_throughput_architecture,
        pretrained_cfg=get_throughput_pretrained_cfg,
        preprocessing=get_throughput_preprocessing,
    threads: get_throughput_threads
    resources:
        gpu=get_throughput_gpus,
    script:
        "../scripts/measure_throughput.py"


rule plot_pareto:
    input:
        leaderboard="results/leaderboard.parquet",
        throughput=ib_throughput.throughput_paths(config),
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
