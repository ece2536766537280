# Job script of rule soup_greedy; the work happens in imagebench.soups.greedy_soup_step.
from imagebench.soups import greedy_soup_step

greedy_soup_step(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
