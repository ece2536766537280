# Job script of rule plot_pareto; the work happens in imagebench.throughput.plot_pareto_step.
from imagebench.throughput import plot_pareto_step

plot_pareto_step(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
