"""Jobs of the soup rules: each ``*_step`` function is the body of one script in workflow/scripts."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from imagebench.errors import DatasetError
from imagebench.soups.build import HeldoutScorer, build_greedy_soup, build_uniform_soup, read_heldout_correct
from imagebench.soups.config import SoupSpec, validate_soups
from imagebench.soups.figures import plot_greedy_steps
from imagebench.soups.splits import write_splits
from imagebench.steps import convert_weights_for_rule, fetch_weights_for_rule, job


def _soup_of(snakemake: Any) -> SoupSpec:
    return validate_soups(snakemake.config)[snakemake.wildcards.soup]


@job
def soup_splits_step(snakemake: Any) -> None:
    """Job of rule soup_splits: the evaluation and held-out manifests, and the split record."""
    sources = dict(snakemake.params.sources)
    write_splits(
        soup=snakemake.wildcards.soup,
        salt=snakemake.params.salt,
        sources=sources,
        manifests={dataset: Path(path) for dataset, path in dict(snakemake.params.manifests).items()},
        outputs={"evaluation": Path(snakemake.output.evaluation), "heldout": Path(snakemake.output.heldout)},
        record_output=Path(snakemake.output.splits),
    )


@job
def soup_finetune_split_step(snakemake: Any) -> None:
    """Job of rule soup_finetune_split: the fine-tuning manifest, drawn again and checked against the split record."""
    import tempfile

    recorded = json.loads(Path(snakemake.input.splits).read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(dir=Path(snakemake.output.finetune).parent) as folder:
        record = write_splits(
            soup=snakemake.wildcards.soup,
            salt=snakemake.params.salt,
            sources=dict(snakemake.params.sources),
            manifests={dataset: Path(path) for dataset, path in dict(snakemake.params.manifests).items()},
            outputs={"finetune": Path(snakemake.output.finetune)},
            record_output=Path(folder) / "splits.json",
        )
    if record["splits"] != recorded["splits"]:
        raise DatasetError(
            f"the fine-tuning split of soup {snakemake.wildcards.soup!r} differs from {snakemake.input.splits}; "
            "a source manifest changed since the splits were drawn. Rerun with --forcerun soup_splits."
        )


@job
def download_ingredient_step(snakemake: Any) -> None:
    """Job of rule soup_download_ingredient."""
    fetch_weights_for_rule(snakemake, model=snakemake.wildcards.member)


@job
def convert_ingredient_step(snakemake: Any) -> None:
    """Job of rule soup_convert_ingredient."""
    convert_weights_for_rule(snakemake, model=snakemake.wildcards.member)


@job
def score_ingredient_step(snakemake: Any) -> None:
    """Job of rule soup_score_ingredient: the ingredient's predictions on the held-out split."""
    from imagebench.checkpoints.load import load_model
    from imagebench.evaluate import EvaluationSettings, evaluate_shard

    params = snakemake.params
    provenance = json.loads(Path(snakemake.input.provenance).read_text(encoding="utf-8"))
    model = load_model(checkpoint=Path(snakemake.input.checkpoint), architecture=params.architecture,
                       pretrained_cfg=params.pretrained_cfg)  # fmt: skip
    settings = replace(EvaluationSettings.from_config(params.evaluation), threads=snakemake.threads)
    evaluate_shard(
        manifest_path=Path(snakemake.input.heldout), dataset_root=Path(params.root), shard=0, num_shards=1,
        dataset=f"{snakemake.wildcards.soup}.heldout", model_name=params.member, model=model,
        checkpoint_sha256=provenance["safetensors_sha256"], output=Path(snakemake.output.predictions),
        settings=settings, preprocessing_overrides=params.preprocessing,
    )  # fmt: skip


def _scorer(snakemake: Any, soup: SoupSpec) -> HeldoutScorer:
    return HeldoutScorer(
        template=Path(snakemake.input.template),
        architecture=soup.architecture,
        pretrained_cfg=soup.pretrained_cfg,
        preprocessing=soup.preprocessing,
        manifest=Path(snakemake.input.heldout),
        root=Path(snakemake.params.heldout_root),
        evaluation=dict(snakemake.params.evaluation),
        threads=snakemake.threads,
    )


def _ingredient_files(snakemake: Any) -> dict[str, Path]:
    return {name: Path(path) for name, path in dict(snakemake.params.files).items()}


@job
def uniform_soup_step(snakemake: Any) -> None:
    """Job of rule soup_uniform."""
    import torch

    torch.set_num_threads(snakemake.threads)
    soup = _soup_of(snakemake)
    build_uniform_soup(
        soup=soup, files=_ingredient_files(snakemake), scorer=_scorer(snakemake, soup),
        splits=json.loads(Path(snakemake.input.splits).read_text(encoding="utf-8")),
        output=Path(snakemake.output.checkpoint), provenance_output=Path(snakemake.output.provenance),
    )  # fmt: skip


@job
def greedy_soup_step(snakemake: Any) -> None:
    """Job of rule soup_greedy."""
    import torch

    torch.set_num_threads(snakemake.threads)
    soup = _soup_of(snakemake)
    scores = dict(zip(snakemake.params.ingredients, map(Path, snakemake.input.scores)))
    heldout_correct, heldout_images = read_heldout_correct(scores)
    build_greedy_soup(
        soup=soup, files=_ingredient_files(snakemake), heldout_correct=heldout_correct,
        heldout_images=heldout_images, scorer=_scorer(snakemake, soup),
        splits=json.loads(Path(snakemake.input.splits).read_text(encoding="utf-8")),
        output=Path(snakemake.output.checkpoint), provenance_output=Path(snakemake.output.provenance),
        steps_output=Path(snakemake.output.steps),
    )  # fmt: skip


@job
def plot_soup_step(snakemake: Any) -> None:
    """Job of rule plot_soup: the greedy steps figure as PNG and SVG."""
    import polars as pl

    from imagebench.figures import FigureSettings, save_figure

    settings = FigureSettings.from_config(snakemake.params.figures)
    uniform = snakemake.input.get("uniform")
    uniform_top1 = json.loads(Path(uniform).read_text(encoding="utf-8"))["heldout_top1"] if uniform else None
    figure = plot_greedy_steps(pl.read_parquet(snakemake.input.steps), uniform_top1=uniform_top1)
    save_figure(figure, Path(snakemake.output.png), settings)
    save_figure(figure, Path(snakemake.output.svg), settings)
