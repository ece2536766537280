"""Check that imagebench's predictions equal timm's own evaluation, image by image.

For every model of a finished run, this script classifies the dataset's images
again with timm's own data pipeline (``create_dataset``, ``create_loader`` and
``resolve_data_config``, as timm's validate.py uses them) and the checkpoint
that the run converted, then compares the top-1 class of every image with the
run's prediction files.

Usage, after ``snakemake --cores all --config dataset_root=PATH``:

    python benchmarks/check_against_timm.py --dataset-root PATH [--dataset imagenet-sample]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl
import torch
from timm.data import create_dataset, create_loader, resolve_data_config

from imagebench.checkpoints.load import load_model


def timm_top1(model: torch.nn.Module, root: Path, *, batch_size: int, workers: int) -> dict[str, int]:
    """Return {file name: top-1 class} from timm's own evaluation pipeline."""
    data_config = resolve_data_config(model=model)
    dataset = create_dataset(name="", root=str(root), split="validation")
    loader = create_loader(
        dataset, batch_size=batch_size, use_prefetcher=False, num_workers=workers, **data_config
    )
    top1 = []
    with torch.inference_mode():
        for batch, _ in loader:
            top1.extend(model(batch).argmax(dim=1).tolist())
    names = [Path(dataset.filename(index)).name for index in range(len(dataset))]
    return dict(zip(names, top1))


def compare(results: Path, dataset: str, root: Path, *, batch_size: int, workers: int) -> list[dict]:
    leaderboard = pl.read_parquet(results / "leaderboard.parquet").filter(
        (pl.col("dataset") == dataset) & (pl.col("model") == pl.col("base_model"))
    )
    rows = []
    for model_name, architecture in leaderboard.select("model", "architecture").iter_rows():
        predictions = pl.read_parquet(results / "predictions" / dataset / model_name / "*.parquet")
        ours = dict(zip(predictions["path"].str.split("/").list.last(), predictions["top5_indices"].list.first()))
        labels = dict(zip(predictions["path"].str.split("/").list.last(), predictions["label"]))
        model = load_model(checkpoint=results / "checkpoints" / f"{model_name}.safetensors", architecture=architecture)
        theirs = timm_top1(model, root, batch_size=batch_size, workers=workers)

        disagreements = sorted(name for name in theirs if ours.get(name) != theirs[name])
        rows.append(
            {
                "model": model_name,
                "images": len(theirs),
                "imagebench_top1": round(100 * sum(ours[n] == labels[n] for n in ours) / len(ours), 3),
                "timm_top1": round(100 * sum(theirs[n] == labels[n] for n in theirs) / len(theirs), 3),
                "disagreements": len(disagreements),
                "first_disagreements": disagreements[:5],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset-root", type=Path, required=True, help="folder of the dataset's images")
    parser.add_argument("--dataset", default="imagenet-sample", help="dataset name in config.yaml")
    parser.add_argument("--results", type=Path, default=Path("results"), help="results folder of the run")
    parser.add_argument("--batch-size", type=int, default=32, help="timm loader batch size")
    parser.add_argument("--workers", type=int, default=2, help="timm loader worker processes")
    arguments = parser.parse_args(argv)

    rows = compare(
        arguments.results, arguments.dataset, arguments.dataset_root,
        batch_size=arguments.batch_size, workers=arguments.workers,
    )
    return 0 if all(row["disagreements"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
