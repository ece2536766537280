# Job script of rule soup_download_ingredient; the work happens in imagebench.soups.download_ingredient_step.
from imagebench.soups import download_ingredient_step

download_ingredient_step(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
