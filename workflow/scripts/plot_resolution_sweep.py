# Job script of rule plot_resolution_sweep; the work happens in imagebench.steps.plot_resolution_sweep.
from imagebench.steps import plot_resolution_sweep

plot_resolution_sweep(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
