# Job script of rule evaluate_shard; the work happens in imagebench.steps.evaluate_shard.
from imagebench.steps import evaluate_shard

evaluate_shard(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
