# Job script of rule convert_checkpoint; the work happens in imagebench.steps.convert_checkpoint.
from imagebench.steps import convert_checkpoint

convert_checkpoint(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
