# Job script of rule download_weights; the work happens in imagebench.steps.download_weights.
from imagebench.steps import download_weights

download_weights(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
