# Job script of rule soup_finetune_split; the work happens in imagebench.soups.soup_finetune_split_step.
from imagebench.soups import soup_finetune_split_step

soup_finetune_split_step(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
