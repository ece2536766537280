# Job script of rule soup_convert_ingredient; the work happens in imagebench.soups.convert_ingredient_step.
from imagebench.soups import convert_ingredient_step

convert_ingredient_step(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
