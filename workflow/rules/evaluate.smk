# Evaluation: one job per (dataset, model, shard), each writing the top-5
# predictions of every image of its shard to a Parquet file.


rule evaluate_shard:
    input:
        manifest="results/datasets/{dataset}/manifest.parquet",
        checkpoint="results/checkpoints/{model}.safetensors",
        provenance="results/checkpoints/{model}.json",
    output:
        predictions="results/predictions/{dataset}/{model}/shard-{shard}-of-{shards}.parquet",
    log:
        "results/logs/evaluate_shard/{dataset}/{model}/shard-{shard}-of-{shards}.log",
    params:
        root=lambda wildcards: ib.dataset_root(config, wildcards.dataset),
        architecture=lambda wildcards: get_model(wildcards)["architecture"],
        pretrained_cfg=lambda wildcards: get_model(wildcards).get("pretrained_cfg"),
        preprocessing=lambda wildcards: get_model(wildcards).get("preprocessing", {}),
        evaluation=config["evaluation"],
    threads: config["evaluation"]["threads"]
    resources:
        gpu=ib.evaluation_gpus(config),
    script:
        "../scripts/evaluate_shard.py"
