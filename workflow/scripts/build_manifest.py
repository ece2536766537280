# Job script of rule build_manifest; the work happens in imagebench.steps.build_manifest.
from imagebench.steps import build_manifest

build_manifest(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
