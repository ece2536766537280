# Job script of rule plot_published; the work happens in imagebench.figures_published.plot_published_step.
from imagebench.figures_published import plot_published_step

plot_published_step(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
