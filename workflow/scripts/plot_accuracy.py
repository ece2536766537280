# Job script of rule plot_accuracy; the work happens in imagebench.steps.plot_accuracy.
from imagebench.steps import plot_accuracy

plot_accuracy(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
