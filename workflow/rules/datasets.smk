# Datasets: fetch a pinned source (git commit, or archive with a sha256) when no root is given, then list every image
# with its synset, its label in timm's ImageNet class order, and its shard.


rule fetch_dataset:
    output:
        root=directory("results/datasets/{dataset}/source"),
    log:
        "results/logs/fetch_dataset/{dataset}.log",
    params:
        source=lambda wildcards: config["datasets"][wildcards.dataset]["source"],
        lock_file=config["lock_file"],
    wildcard_constraints:
        dataset=ib_soups.name_pattern(ib_soups.plain_dataset_names(config)),
    localrule: True
    script:
        "../scripts/fetch_dataset.py"


rule build_manifest:
    input:
        unpack(get_dataset_input),
    output:
        manifest="results/datasets/{dataset}/manifest.parquet",
    log:
        "results/logs/build_manifest/{dataset}.log",
    params:
        root=lambda wildcards: ib.dataset_root(config, wildcards.dataset),
        layout=lambda wildcards: config["datasets"][wildcards.dataset]["layout"],
        shards=lambda wildcards: ib.num_shards(config, wildcards.dataset),
        label_file=lambda wildcards: config["datasets"][wildcards.dataset].get("label_file"),
        class_map_file=lambda wildcards: config["datasets"][wildcards.dataset].get("class_map_file"),
        real_labels_file=lambda wildcards: config["datasets"][wildcards.dataset].get("real_labels_file"),
        expect=lambda wildcards: config["datasets"][wildcards.dataset].get("expect"),
        class_subset=lambda wildcards: config["datasets"][wildcards.dataset].get("class_subset", False),
    wildcard_constraints:
        dataset=ib_soups.name_pattern(ib_soups.plain_dataset_names(config)),
    localrule: True
    resources:
        host_share=1,
    script:
        "../scripts/build_manifest.py"
