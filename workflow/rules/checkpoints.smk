# Checkpoints: download the weights a model entry names, verify their sha256,
# and convert them once to safetensors in timm's key format.


rule download_weights:
    output:
        weights="results/downloads/{model}.weights",
        provenance="results/downloads/{model}.json",
    log:
        "results/logs/download_weights/{model}.log",
    params:
        source=lambda wildcards: get_model(wildcards)["weights"],
        lock_file=config["lock_file"],
    wildcard_constraints:
        model=ib_soups.name_pattern(ib_soups.plain_model_names(config)),
    localrule: True
    script:
        "../scripts/download_weights.py"


rule convert_checkpoint:
    input:
        weights="results/downloads/{model}.weights",
        provenance="results/downloads/{model}.json",
    output:
        checkpoint="results/checkpoints/{model}.safetensors",
        provenance="results/checkpoints/{model}.json",
    log:
        "results/logs/convert_checkpoint/{model}.log",
    params:
        architecture=lambda wildcards: get_model(wildcards)["architecture"],
        weights_format=lambda wildcards: get_model(wildcards)["weights"].get("format", "timm"),
    wildcard_constraints:
        model=ib_soups.name_pattern(ib_soups.plain_model_names(config)),
    localrule: True
    resources:
        host_share=1,
    script:
        "../scripts/convert_checkpoint.py"
