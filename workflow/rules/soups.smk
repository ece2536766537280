# Model soups: split each soup's datasets into fine-tuning, held-out and evaluation images,
# fine-tune or download the ingredients, score them on the held-out split, and build the
# uniform and greedy soups as checkpoints that the evaluation rules score like any model.

from imagebench import soups as ib_soups

# Rejects an invalid soups: section (mixed architectures, overlapping fractions) before any job runs.
SOUPS = ib_soups.validate_soups(config)


def get_soup(wildcards):
    return SOUPS[wildcards.soup]


def get_soup_config(wildcards):
    return config["soups"][wildcards.soup]


def get_soup_split_sources(wildcards):
    return ib_soups.split_sources(get_soup(wildcards), config)


def get_soup_source_manifests(wildcards):
    datasets = {split.dataset for split in get_soup(wildcards).splits.values()}
    return {dataset: str(ib.manifest_path(dataset)) for dataset in sorted(datasets)}


def get_soup_source_manifest_list(wildcards):
    return list(get_soup_source_manifests(wildcards).values())


def get_member_soup(wildcards):
    return ib_soups.find_member(SOUPS, wildcards.member)[0]


def get_member_ingredient(wildcards):
    return ib_soups.find_member(SOUPS, wildcards.member)[1]


def get_soup_salt(wildcards):
    return get_soup(wildcards).salt


def get_soup_architecture(wildcards):
    return get_soup(wildcards).architecture


def get_soup_pretrained_cfg(wildcards):
    return get_soup(wildcards).pretrained_cfg


def get_soup_preprocessing(wildcards):
    return get_soup(wildcards).preprocessing


def get_member_name(wildcards):
    return wildcards.member


def get_member_architecture(wildcards):
    return get_member_soup(wildcards).architecture


def get_member_pretrained_cfg(wildcards):
    return get_member_soup(wildcards).pretrained_cfg


def get_member_preprocessing(wildcards):
    return get_member_soup(wildcards).preprocessing


def get_member_base_model(wildcards):
    return get_member_ingredient(wildcards).model


def get_member_finetune_settings(wildcards):
    return get_member_ingredient(wildcards).finetune


def get_member_weights(wildcards):
    return get_member_ingredient(wildcards).weights


def get_member_weights_format(wildcards):
    return get_member_ingredient(wildcards).weights_format


def get_finetune_input(wildcards):
    soup, ingredient = ib_soups.find_member(SOUPS, wildcards.member)
    return {
        "checkpoint": str(ib.checkpoint_path(ingredient.model)),
        "provenance": str(ib.provenance_path(ingredient.model)),
        "split": str(ib_soups.split_manifest_path(soup.name, "finetune")),
    }


def get_finetune_root(wildcards):
    soup = get_member_soup(wildcards)
    return ib.dataset_root(config, soup.splits["finetune"].dataset)


def get_finetune_field(wildcards):
    soup, ingredient = ib_soups.find_member(SOUPS, wildcards.member)
    return f"soups.{soup.name}.ingredients.{ingredient.name}.finetune"


def get_ingredient_checkpoint_input(wildcards):
    member = get_soup(wildcards).ingredient(wildcards.ingredient).member
    return {
        "checkpoint": str(ib.checkpoint_path(member)),
        "provenance": str(ib.provenance_path(member)),
        "heldout": str(ib_soups.split_manifest_path(wildcards.soup, "heldout")),
    }


def get_ingredient_member(wildcards):
    return get_soup(wildcards).ingredient(wildcards.ingredient).member


def get_heldout_root(wildcards):
    return ib.dataset_root(config, get_soup(wildcards).splits["heldout"].dataset)


def get_soup_build_input(wildcards):
    soup = get_soup(wildcards)
    return {
        "files": list(ib_soups.averaging_inputs(soup).values()),
        "template": str(ib.checkpoint_path(soup.ingredients[0].member)),
        "heldout": str(ib_soups.split_manifest_path(soup.name, "heldout")),
        "splits": str(ib_soups.soup_folder(soup.name) / "splits.json"),
    }


def get_soup_averaging_files(wildcards):
    return ib_soups.averaging_inputs(get_soup(wildcards))


def get_soup_ingredient_names(wildcards):
    return [ingredient.name for ingredient in get_soup(wildcards).ingredients]


def get_soup_heldout_scores(wildcards):
    return [str(ib_soups.heldout_score_path(wildcards.soup, name)) for name in get_soup_ingredient_names(wildcards)]


def get_soup_plot_input(wildcards):
    inputs = {"steps": str(ib_soups.soup_folder(wildcards.soup) / "greedy_steps.parquet")}
    if "uniform" in get_soup(wildcards).recipes:
        inputs["uniform"] = str(ib.provenance_path(f"{wildcards.soup}.uniform"))
    return inputs


rule soup_splits:
    input:
        manifests=get_soup_source_manifest_list,
    output:
        evaluation="results/datasets/{soup}.evaluation/manifest.parquet",
        heldout="results/soups/{soup}/heldout.parquet",
        splits="results/soups/{soup}/splits.json",
    log:
        "results/logs/soup_splits/{soup}.log",
    params:
        salt=get_soup_salt,
        sources=get_soup_split_sources,
        manifests=get_soup_source_manifests,
    wildcard_constraints:
        soup=ib_soups.name_pattern(list(SOUPS)),
    localrule: True
    script:
        "../scripts/soup_splits.py"


rule soup_finetune_split:
    input:
        manifests=get_soup_source_manifest_list,
        splits="results/soups/{soup}/splits.json",
    output:
        finetune="results/soups/{soup}/finetune.parquet",
    log:
        "results/logs/soup_finetune_split/{soup}.log",
    params:
        salt=get_soup_salt,
        sources=get_soup_split_sources,
        manifests=get_soup_source_manifests,
    wildcard_constraints:
        soup=ib_soups.name_pattern([name for name, soup in SOUPS.items() if "finetune" in soup.splits]),
    localrule: True
    script:
        "../scripts/soup_finetune_split.py"


rule finetune_ingredient:
    input:
        unpack(get_finetune_input),
    output:
        checkpoint="results/checkpoints/{member}.safetensors",
        provenance="results/checkpoints/{member}.json",
    log:
        "results/logs/finetune_ingredient/{member}.log",
    params:
        member=get_member_name,
        base_model=get_member_base_model,
        architecture=get_member_architecture,
        pretrained_cfg=get_member_pretrained_cfg,
        preprocessing=get_member_preprocessing,
        settings=get_member_finetune_settings,
        field=get_finetune_field,
        root=get_finetune_root,
    threads: config["evaluation"]["threads"]
    wildcard_constraints:
        member=ib_soups.name_pattern(ib_soups.members_of_kind(SOUPS, "finetune")),
    resources:
        host_share=1,
    script:
        "../scripts/finetune_ingredient.py"


rule soup_download_ingredient:
    output:
        weights="results/soups/downloads/{member}.weights",
        provenance="results/soups/downloads/{member}.json",
    log:
        "results/logs/soup_download_ingredient/{member}.log",
    params:
        source=get_member_weights,
        lock_file=config["lock_file"],
    wildcard_constraints:
        member=ib_soups.name_pattern(ib_soups.members_of_kind(SOUPS, "weights")),
    localrule: True
    script:
        "../scripts/soup_download_ingredient.py"


rule soup_convert_ingredient:
    input:
        weights="results/soups/downloads/{member}.weights",
        provenance="results/soups/downloads/{member}.json",
    output:
        checkpoint="results/checkpoints/{member}.safetensors",
        provenance="results/checkpoints/{member}.json",
    log:
        "results/logs/soup_convert_ingredient/{member}.log",
    params:
        architecture=get_member_architecture,
        weights_format=get_member_weights_format,
    wildcard_constraints:
        member=ib_soups.name_pattern(ib_soups.members_of_kind(SOUPS, "weights")),
    localrule: True
    resources:
        host_share=1,
    script:
        "../scripts/soup_convert_ingredient.py"


rule soup_score_ingredient:
    input:
        unpack(get_ingredient_checkpoint_input),
    output:
        predictions="results/soups/{soup}/heldout/{ingredient}.parquet",
    log:
        "results/logs/soup_score_ingredient/{soup}/{ingredient}.log",
    params:
        member=get_ingredient_member,
        architecture=get_soup_architecture,
        pretrained_cfg=get_soup_pretrained_cfg,
        preprocessing=get_soup_preprocessing,
        root=get_heldout_root,
        evaluation=config["evaluation"],
    threads: config["evaluation"]["threads"]
    wildcard_constraints:
        soup=ib_soups.name_pattern(list(SOUPS)),
        ingredient=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    resources:
        host_share=1,
    script:
        "../scripts/soup_score_ingredient.py"


rule soup_uniform:
    input:
        unpack(get_soup_build_input),
    output:
        checkpoint="results/checkpoints/{soup}.uniform.safetensors",
        provenance="results/checkpoints/{soup}.uniform.json",
    log:
        "results/logs/soup_uniform/{soup}.log",
    params:
        files=get_soup_averaging_files,
        heldout_root=get_heldout_root,
        evaluation=config["evaluation"],
        soup_config=get_soup_config,
    threads: config["evaluation"]["threads"]
    wildcard_constraints:
        soup=ib_soups.name_pattern([name for name, soup in SOUPS.items() if "uniform" in soup.recipes]),
    resources:
        host_share=1,
    script:
        "../scripts/soup_uniform.py"


rule soup_greedy:
    input:
        unpack(get_soup_build_input),
        scores=get_soup_heldout_scores,
    output:
        checkpoint="results/checkpoints/{soup}.greedy.safetensors",
        provenance="results/checkpoints/{soup}.greedy.json",
        steps="results/soups/{soup}/greedy_steps.parquet",
    log:
        "results/logs/soup_greedy/{soup}.log",
    params:
        files=get_soup_averaging_files,
        ingredients=get_soup_ingredient_names,
        heldout_root=get_heldout_root,
        evaluation=config["evaluation"],
        soup_config=get_soup_config,
    threads: config["evaluation"]["threads"]
    wildcard_constraints:
        soup=ib_soups.name_pattern([name for name, soup in SOUPS.items() if "greedy" in soup.recipes]),
    resources:
        host_share=1,
    script:
        "../scripts/soup_greedy.py"


rule plot_soup:
    input:
        unpack(get_soup_plot_input),
    output:
        png=report(
            "results/figures/soup-{soup}.png",
            caption="../report/soup_greedy.rst",
            category="Soups",
        ),
        svg="results/figures/soup-{soup}.svg",
    log:
        "results/logs/plot_soup/{soup}.log",
    params:
        figures=config["figures"],
    wildcard_constraints:
        soup=ib_soups.name_pattern([name for name, soup in SOUPS.items() if "greedy" in soup.recipes]),
    localrule: True
    script:
        "../scripts/soup_plot.py"
