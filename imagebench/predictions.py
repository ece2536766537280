"""The prediction file format, readable without importing torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from imagebench.io import read_parquet_metadata

# The fixed schema of a prediction file. Failed images have null predictions.
PREDICTION_SCHEMA = {
    "dataset": pl.String,
    "model": pl.String,
    "image_id": pl.String,
    "path": pl.String,
    "label": pl.Int32,
    "status": pl.String,
    "error": pl.String,
    "top5_indices": pl.List(pl.Int32),
    "top5_probs": pl.List(pl.Float32),
    "true_class_logprob": pl.Float32,
    "correct_top1": pl.Boolean,
    "correct_top5": pl.Boolean,
    "checkpoint_sha256": pl.String,
}


def read_prediction_metadata(path: Path) -> dict[str, Any]:
    """Return the evaluation record stored in a prediction file's footer."""
    metadata = read_parquet_metadata(path)
    record = json.loads(metadata["imagebench"])
    record["run"] = json.loads(metadata.get("imagebench.run", "{}"))
    return record
