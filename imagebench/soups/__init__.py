"""Model soups: weight averages of fine-tuned checkpoints of one architecture (Wortsman et al. 2022).

A ``soups:`` entry of the config names the ingredients, a held-out split that ranks and
selects them, and the evaluation split that the soups are scored on. Two recipes:

- uniform: the mean of all ingredients;
- greedy: rank the ingredients by held-out top-1, start from the best, and add each next one
  to the running mean only when the held-out top-1 of the mean STRICTLY increases.

Each soup becomes a model ``<soup>.<recipe>`` with a checkpoint in results/checkpoints, and
its evaluation split a dataset ``<soup>.evaluation``, so the evaluation rules score them like
any other model. Fine-tuned and downloaded ingredients become models ``<soup>.<ingredient>``.

Modules:

- ``config``: the ``soups:`` section parsed and checked, and the models, datasets and outputs it adds;
- ``paths``: the files that the soup rules write and read;
- ``splits``: the fine-tuning, held-out and evaluation splits, drawn by a salted hash of each image id;
- ``averaging``: the float64 running mean of state dicts and the greedy recipe;
- ``build``: held-out scoring, and the uniform and greedy soups built and saved with their provenance;
- ``figures``: the greedy-steps figure;
- ``steps``: the jobs that the scripts in workflow/scripts run.

The rules, scripts and tests import from ``imagebench.soups``, so every public name of the
modules is re-exported here. Snakemake imports this package while it parses the workflow,
so torch, timm, safetensors, polars and plotnine are imported inside the functions that need them.
"""

from imagebench.soups.averaging import (
    GreedyStep, RunningAverage, average_state_dicts, greedy_soup, rank_ingredients, steps_frame,
)  # fmt: skip
from imagebench.soups.build import (
    HeldoutScorer, build_greedy_soup, build_uniform_soup, load_ingredient, read_heldout_correct, save_soup,
    state_dict_sha256,
)  # fmt: skip
from imagebench.soups.config import (
    DEFAULT_SALT, INGREDIENT_KINDS, RECIPES, IngredientSpec, SoupSpec, SplitSpec, add_soup_entries,
    derived_model_names, find_member, members_of_kind, name_pattern, plain_dataset_names, plain_model_names,
    soup_evaluations, soup_outputs, validate_soups,
)  # fmt: skip
from imagebench.soups.figures import plot_greedy_steps
from imagebench.soups.paths import (
    averaging_inputs, heldout_score_path, soup_figure_path, soup_folder, split_manifest_path,
)  # fmt: skip
from imagebench.soups.splits import check_disjoint, hash_positions, select_split, split_sources, write_splits
from imagebench.soups.steps import (
    convert_ingredient_step, download_ingredient_step, greedy_soup_step, plot_soup_step, score_ingredient_step,
    soup_finetune_split_step, soup_splits_step, uniform_soup_step,
)  # fmt: skip

__all__ = [
    # config
    "DEFAULT_SALT", "INGREDIENT_KINDS", "RECIPES", "IngredientSpec", "SoupSpec", "SplitSpec", "add_soup_entries",
    "derived_model_names", "find_member", "members_of_kind", "name_pattern", "plain_dataset_names",
    "plain_model_names", "soup_evaluations", "soup_outputs", "validate_soups",
    # paths
    "averaging_inputs", "heldout_score_path", "soup_figure_path", "soup_folder", "split_manifest_path",
    # splits
    "check_disjoint", "hash_positions", "select_split", "split_sources", "write_splits",
    # averaging
    "GreedyStep", "RunningAverage", "average_state_dicts", "greedy_soup", "rank_ingredients", "steps_frame",
    # build
    "HeldoutScorer", "build_greedy_soup", "build_uniform_soup", "load_ingredient", "read_heldout_correct",
    "save_soup", "state_dict_sha256",
    # figures
    "plot_greedy_steps",
    # steps
    "convert_ingredient_step", "download_ingredient_step", "greedy_soup_step", "plot_soup_step",
    "score_ingredient_step", "soup_finetune_split_step", "soup_splits_step", "uniform_soup_step",
]  # fmt: skip
