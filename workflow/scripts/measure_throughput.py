# Job script of rule measure_throughput; the work happens in imagebench.throughput.measure_throughput_step.
from imagebench.throughput import measure_throughput_step

measure_throughput_step(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
