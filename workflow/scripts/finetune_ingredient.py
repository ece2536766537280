# Job script of rule finetune_ingredient; the work happens in imagebench.finetune.finetune_step.
from imagebench.finetune import finetune_step

finetune_step(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
