# Job script of rule aggregate; the work happens in imagebench.steps.aggregate.
from imagebench.steps import aggregate

aggregate(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
