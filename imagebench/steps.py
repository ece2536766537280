"""Entry points of the workflow's jobs.

Each function takes the ``snakemake`` object that Snakemake passes to a rule's
script and calls the package function that does the work. The ``job`` decorator
sends logging and standard error to the rule's log file. Keeping the functions
here, rather than in the scripts, lets the tests call them directly.

This module imports no other imagebench module at the top, because the modules
that define their own jobs (throughput, finetune, figures_published, soups) import
``job`` from it, and an import back would be a cycle.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_LOGGER = logging.getLogger(__name__)


@contextlib.contextmanager
def logging_to(log_path: str | Path | None) -> Iterator[None]:
    """Send log records, warnings and standard error (tqdm's progress) to ``log_path``."""
    if log_path is None:
        yield
        return

    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8", buffering=1) as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        previous_stderr = sys.stderr
        sys.stderr = stream
        try:
            yield
        except Exception:
            _LOGGER.exception("job failed")
            raise
        finally:
            sys.stderr = previous_stderr
            root.removeHandler(handler)


def job(function: Callable[[Any], None]) -> Callable[[Any], None]:
    """Wrap a job function so that it runs inside ``logging_to`` the rule's first log file.

    A rule without a ``log:`` runs the function with logging left as it is.
    """

    @functools.wraps(function)
    def run_job(snakemake: Any) -> None:
        log_path = snakemake.log[0] if len(snakemake.log) else None
        with logging_to(log_path):
            function(snakemake)

    return run_job


@job
def download_weights(snakemake: Any) -> None:
    fetch_weights_for_rule(snakemake, model=snakemake.wildcards.model)


@job
def convert_checkpoint(snakemake: Any) -> None:
    convert_weights_for_rule(snakemake, model=snakemake.wildcards.model)


def fetch_weights_for_rule(snakemake: Any, *, model: str) -> None:
    """Fetch the weights that the rule's ``source`` param names into its outputs (weights and provenance JSON)."""
    from imagebench.checkpoints.fetch import fetch_weights
    from imagebench.io import write_json_atomic

    provenance = fetch_weights(
        model=model,
        source=dict(snakemake.params.source),
        destination=Path(snakemake.output.weights),
        lock_file=Path(snakemake.params.lock_file),
    )
    write_json_atomic(snakemake.output.provenance, provenance)


def convert_weights_for_rule(snakemake: Any, *, model: str) -> None:
    """Convert the rule's input weights to its safetensors checkpoint and provenance outputs."""
    import json

    from imagebench.checkpoints.convert import convert_checkpoint as convert

    convert(
        model=model,
        raw_path=Path(snakemake.input.weights),
        architecture=snakemake.params.architecture,
        weights_format=snakemake.params.weights_format,
        output=Path(snakemake.output.checkpoint),
        provenance=json.loads(Path(snakemake.input.provenance).read_text(encoding="utf-8")),
        provenance_output=Path(snakemake.output.provenance),
    )


@job
def fetch_dataset(snakemake: Any) -> None:
    from imagebench.datasets.archive_source import fetch_archive_dataset
    from imagebench.datasets.git_source import fetch_git_dataset

    source = snakemake.params.source
    if "git" in source:
        fetch_git_dataset(url=source["git"], commit=source["commit"], destination=Path(snakemake.output.root))
    else:
        fetch_archive_dataset(
            dataset=snakemake.wildcards.dataset,
            url=source["url"],
            sha256=source["sha256"],
            destination=Path(snakemake.output.root),
            lock_file=Path(snakemake.params.lock_file),
        )


@job
def build_manifest(snakemake: Any) -> None:
    from imagebench.datasets.manifest import build_manifest as build
    from imagebench.datasets.manifest import class_mask_for, write_manifest

    from imagebench.errors import DatasetError

    params = snakemake.params
    try:
        frame = build(
            root=Path(params.root),
            layout=params.layout,
            num_shards=params.shards,
            label_file=_optional_path(params.label_file),
            class_map_file=_optional_path(params.class_map_file),
            real_labels_file=_optional_path(params.real_labels_file),
            expect=params.expect,
        )
    except DatasetError as error:
        # The messages name the folder; a config with several datasets also needs the dataset's name.
        raise DatasetError(f"dataset {snakemake.wildcards.dataset!r}: {error}") from error
    write_manifest(
        frame,
        Path(snakemake.output.manifest),
        layout=params.layout,
        num_shards=params.shards,
        class_mask=class_mask_for(frame, params.layout, class_subset=params.class_subset),
    )


@job
def evaluate_shard(snakemake: Any) -> None:
    import json

    from imagebench.checkpoints.load import load_model
    from imagebench.evaluate import EvaluationSettings
    from imagebench.evaluate import evaluate_shard as evaluate

    params = snakemake.params
    provenance = json.loads(Path(snakemake.input.provenance).read_text())
    model = load_model(
        checkpoint=Path(snakemake.input.checkpoint),
        architecture=params.architecture,
        pretrained_cfg=params.pretrained_cfg,
    )
    settings = EvaluationSettings.from_config(params.evaluation)
    settings = EvaluationSettings(**{**settings.__dict__, "threads": snakemake.threads})
    evaluate(
        manifest_path=Path(snakemake.input.manifest),
        dataset_root=Path(params.root),
        shard=int(snakemake.wildcards.shard),
        num_shards=int(snakemake.wildcards.shards),
        dataset=snakemake.wildcards.dataset,
        model_name=snakemake.wildcards.evaluation,
        model=model,
        checkpoint_sha256=provenance["safetensors_sha256"],
        output=Path(snakemake.output.predictions),
        settings=settings,
        preprocessing_overrides=params.preprocessing,
    )


@job
def aggregate(snakemake: Any) -> None:
    """Run rule aggregate: the leaderboard with the throughput summary and the published comparison."""
    from imagebench.aggregate import build_leaderboard, join_throughput, write_leaderboard
    from imagebench.published import check_published_names, compare_with_published, read_published
    from imagebench.throughput import summarize_throughput

    params = snakemake.params
    # The workflow checks these names while it parses the config. Checking again here covers a
    # published table edited since, before any prediction is read.
    published = read_published(snakemake.input.published)
    published_models, published_datasets = dict(params.published_models), dict(params.published_datasets)
    check_published_names(mapping=published_models, datasets=published_datasets, published=published)

    frame = build_leaderboard(
        predictions=[Path(path) for path in snakemake.input.predictions],
        manifests=dict(zip(params.datasets, map(Path, snakemake.input.manifests))),
        provenances=dict(zip(params.evaluations, map(Path, snakemake.input.provenances))),
    )
    frame = join_throughput(frame, summarize_throughput([Path(path) for path in snakemake.input.throughput]))
    frame = compare_with_published(frame, published, mapping=published_models, datasets=published_datasets)
    write_leaderboard(
        frame,
        parquet=Path(snakemake.output.parquet),
        csv=Path(snakemake.output.csv),
        markdown=Path(snakemake.output.markdown),
    )


@job
def plot_accuracy(snakemake: Any) -> None:
    import polars as pl

    from imagebench.figures import FigureSettings, plot_accuracy as plot, save_figure

    settings = FigureSettings.from_config(snakemake.params.figures)
    figure = plot(pl.read_parquet(snakemake.input.leaderboard), settings)
    save_figure(figure, Path(snakemake.output.png), settings)
    save_figure(figure, Path(snakemake.output.svg), settings)


def _optional_path(value: str | None) -> Path | None:
    return Path(value) if value else None


@job
def plot_resolution_sweep(snakemake: Any) -> None:
    import polars as pl

    from imagebench.figures import FigureSettings, plot_resolution_sweep as plot, save_figure

    settings = FigureSettings.from_config(snakemake.params.figures)
    figure = plot(pl.read_parquet(snakemake.input.leaderboard), snakemake.wildcards.model, settings)
    save_figure(figure, Path(snakemake.output.png), settings)
    save_figure(figure, Path(snakemake.output.svg), settings)
