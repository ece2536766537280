"""Small builders for test inputs that do not depend on the dataset stage."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from timm.data import ImageNetInfo

from imagebench.io import write_parquet_atomic


def write_synset_manifest(root: Path, manifest: Path, *, num_shards: int) -> pl.DataFrame:
    """Write a manifest for a folder of ``<synset>_*.JPEG`` files, shards assigned round-robin."""
    class_index = {synset: index for index, synset in enumerate(ImageNetInfo().label_names())}
    files = sorted(path.name for path in root.iterdir())
    frame = pl.DataFrame(
        {
            "image_id": [name.rsplit(".", 1)[0] for name in files],
            "path": files,
            "synset": [name.split("_", 1)[0] for name in files],
        }
    ).with_columns(
        pl.col("synset").replace_strict(class_index, return_dtype=pl.Int32).alias("label"),
        (pl.int_range(pl.len()) % num_shards).cast(pl.Int32).alias("shard"),
    )
    write_parquet_atomic(frame, manifest, metadata={"layout": "synset-files", "num_shards": str(num_shards)})
    return frame
