# Job script of rule soup_score_ingredient; the work happens in imagebench.soups.score_ingredient_step.
from imagebench.soups import score_ingredient_step

score_ingredient_step(snakemake)  # noqa: F821 (Snakemake defines the snakemake object)
