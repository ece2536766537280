"""The fine-tuning, held-out and evaluation splits of a soup.

Splits are drawn by a salted sha256 of each image id, so an image keeps its split when
images are added to a dataset. For each dataset, the fine-tuning split takes the hash
interval [0, f), the held-out split the next interval, and, on the evaluation dataset, the
evaluation split takes the rest. Every split is written as a manifest, and the split job
rejects any two splits that share an image id or an image file.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagebench.errors import DatasetError
from imagebench.soups.paths import split_manifest_path
from imagebench.workflow import dataset_root, num_shards

if TYPE_CHECKING:
    import polars as pl

    from imagebench.soups.config import SoupSpec

_LOGGER = logging.getLogger(__name__)


def hash_positions(image_ids: Sequence[str], *, salt: str) -> list[float]:
    """Return each image id's position in [0, 1): the first 8 bytes of sha256(salt NUL image_id) over 2**64."""
    positions = []
    for image_id in image_ids:
        digest = hashlib.sha256(f"{salt}\x00{image_id}".encode()).digest()
        positions.append(int.from_bytes(digest[:8], "big") / 2**64)
    return positions


def select_split(manifest: pl.DataFrame, *, salt: str, start: float, stop: float, shards: int) -> pl.DataFrame:
    """Return the manifest rows whose hash position lies in [start, stop), re-sharded round-robin in path order."""
    import polars as pl

    positions = pl.Series("position", hash_positions(manifest["image_id"].to_list(), salt=salt), dtype=pl.Float64)
    inside = (positions >= start) & (positions < stop)
    selected = manifest.filter(inside).sort("path")
    return selected.with_columns((pl.int_range(pl.len()) % shards).cast(pl.Int32).alias("shard"))


def check_disjoint(frames: Mapping[str, tuple[pl.DataFrame, Path]]) -> None:
    """Raise DatasetError when two splits share an image id or an image file (after resolving symlinks)."""
    names = list(frames)
    for position, first in enumerate(names):
        for second in names[position + 1 :]:
            first_frame, first_root = frames[first]
            second_frame, second_root = frames[second]
            shared_ids = set(first_frame["image_id"].to_list()) & set(second_frame["image_id"].to_list())
            shared_files = _files(first_frame, first_root) & _files(second_frame, second_root)
            if shared_ids or shared_files:
                examples = sorted(shared_ids)[:3] or sorted(shared_files)[:3]
                raise DatasetError(
                    f"the {first} and {second} splits share {len(shared_ids)} image ids and {len(shared_files)} files "
                    f"(first: {examples}); a model selected or trained on an image must not be scored on it. "
                    "Take the held-out or fine-tuning split from a dataset without those images, or as a fraction "
                    "of the evaluation dataset."
                )


def _files(frame: pl.DataFrame, root: Path) -> set[str]:
    return {str((root / path).resolve()) for path in frame["path"].to_list()}


def write_splits(
    *,
    soup: str,
    salt: str,
    sources: Mapping[str, Mapping[str, Any]],
    manifests: Mapping[str, Path],
    outputs: Mapping[str, Path],
    record_output: Path,
) -> dict[str, Any]:
    """Draw every split of a soup from its dataset's manifest, check that they are disjoint, and write them.

    ``sources`` is what ``split_sources`` returns, ``manifests`` maps each source dataset to its
    manifest, and ``outputs`` maps the splits to write to their manifest paths. The record
    written to ``record_output`` gives, per split, its dataset, hash interval, image count and
    the sha256 of its sorted image ids.
    """
    from imagebench.datasets.manifest import read_manifest, write_manifest
    from imagebench.io import sha256_file, write_json_atomic

    frames, metadata_by_split = {}, {}
    record = {"soup": soup, "salt": salt, "hash": "sha256(salt NUL image_id)[:8] / 2**64", "splits": {}}
    for name, source in sources.items():
        manifest, metadata = read_manifest(manifests[source["dataset"]])
        frame = select_split(manifest, salt=salt, start=source["start"], stop=source["stop"], shards=source["shards"])
        if frame.height == 0:
            raise DatasetError(
                f"soup {soup!r}: the {name} split of dataset {source['dataset']!r} (hash interval "
                f"[{source['start']:g}, {source['stop']:g}) of {manifest.height} images) is empty; raise its fraction"
            )
        frames[name] = (frame, Path(source["root"]))
        metadata_by_split[name] = metadata
        record["splits"][name] = {
            "dataset": source["dataset"],
            "interval": [source["start"], source["stop"]],
            "images": frame.height,
            "image_ids_sha256": hashlib.sha256("\n".join(sorted(frame["image_id"].to_list())).encode()).hexdigest(),
            "source_manifest_sha256": sha256_file(manifests[source["dataset"]]),
            "manifest": str(split_manifest_path(soup, name)),
        }

    check_disjoint(frames)
    record["disjoint"] = "checked by image id and by resolved file path"
    for name, path in outputs.items():
        frame, _ = frames[name]
        metadata = metadata_by_split[name]
        write_manifest(frame, Path(path), layout=metadata["layout"], num_shards=sources[name]["shards"],
                       class_mask=metadata["class_mask"])  # fmt: skip
    write_json_atomic(record_output, record)
    _LOGGER.info("soup %s splits: %s", soup, {name: split["images"] for name, split in record["splits"].items()})
    return record


def split_sources(soup: SoupSpec, config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return, per split, what the split job needs: dataset, hash interval, root, layout and shard count."""
    sources = {}
    for name, split in soup.splits.items():
        sources[name] = {
            "dataset": split.dataset,
            "start": split.start,
            "stop": split.stop,
            "root": dataset_root(config, split.dataset),
            "shards": num_shards(config, split.dataset) if name == "evaluation" else 1,
        }
    return sources
