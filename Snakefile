# imagebench: benchmark ImageNet classifiers, from checkpoints to a leaderboard and report.
# Usage: snakemake --cores all [--config dataset_root=PATH]; see README.md.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/checkpoints.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/throughput.smk"
include: "workflow/rules/soups.smk"
include: "workflow/rules/published.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        get_final_outputs(),
    default_target: True
