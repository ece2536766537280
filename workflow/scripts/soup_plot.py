# Job script of rule plot_soup; the work happens in imagebench.soups.plot_soup_step.
from imagebench.soups import plot_soup_step

plot_soup_step(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
