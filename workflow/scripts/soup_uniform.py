# Job script of rule soup_uniform; the work happens in imagebench.soups.uniform_soup_step.
from imagebench.soups import uniform_soup_step

uniform_soup_step(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
