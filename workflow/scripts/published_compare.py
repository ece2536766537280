# Job script of rule compare_published; the work happens in imagebench.published.compare_published_step.
from imagebench.published import compare_published_step

compare_published_step(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
