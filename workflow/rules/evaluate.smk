# Evaluation: one job per (dataset, evaluation, shard), each writing the top-5
# predictions of every image of its shard to a Parquet file. An evaluation is
# a model at its configured preprocessing, or at one test resolution of a sweep.


rule evaluate_shard:
    input:
        manifest="results/datasets/{dataset}/manifest.parquet",
        checkpoint=lambda wildcards: ib.checkpoint_path(get_evaluation(wildcards)["model"]),
        provenance=lambda wildcards: ib.provenance_path(get_evaluation(wildcards)["model"]),
    output:
        predictions="results/predictions/{dataset}/{evaluation}/shard-{shard}-of-{shards}.parquet",
    log:
        "results/logs/evaluate_shard/{dataset}/{evaluation}/shard-{shard}-of-{shards}.log",
    params:
        root=lambda wildcards: ib.dataset_root(config, wildcards.dataset),
        architecture=lambda wildcards: get_evaluation_model(wildcards)["architecture"],
        pretrained_cfg=lambda wildcards: get_evaluation_model(wildcards).get("pretrained_cfg"),
        preprocessing=lambda wildcards: get_evaluation(wildcards)["preprocessing"],
        evaluation=config["evaluation"],
    threads: config["evaluation"]["threads"]
    resources:
        host_share=1,
        gpu=ib.evaluation_gpus(config),
    script:
        "../scripts/evaluate_shard.py"
