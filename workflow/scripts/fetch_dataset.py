# Job script of rule fetch_dataset; the work happens in imagebench.steps.fetch_dataset.
from imagebench.steps import fetch_dataset

fetch_dataset(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
