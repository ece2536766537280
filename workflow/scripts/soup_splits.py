# Job script of rule soup_splits; the work happens in imagebench.soups.soup_splits_step.
from imagebench.soups import soup_splits_step

soup_splits_step(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
