"""Uniform and greedy soups built from ingredient checkpoints, scored on the held-out split and saved."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagebench.errors import DatasetError
from imagebench.soups.averaging import RunningAverage, greedy_soup, percent, steps_frame

if TYPE_CHECKING:
    import torch

    from imagebench.soups.config import SoupSpec

_LOGGER = logging.getLogger(__name__)


class HeldoutScorer:
    """Scores state dicts on a held-out manifest with the evaluation code of the leaderboard.

    One timm model is built from ``template`` (any timm-keyed checkpoint of the soup's
    architecture) and each state dict is loaded into it strictly.
    """

    def __init__(
        self,
        *,
        template: Path,
        architecture: str,
        pretrained_cfg: str | None,
        preprocessing: dict[str, Any],
        manifest: Path,
        root: Path,
        evaluation: dict[str, Any],
        threads: int,
    ) -> None:
        from imagebench.checkpoints.load import load_model
        from imagebench.evaluate import EvaluationSettings

        self.model = load_model(checkpoint=template, architecture=architecture, pretrained_cfg=pretrained_cfg)
        self.preprocessing = preprocessing
        self.manifest = manifest
        self.root = root
        self.settings = replace(EvaluationSettings.from_config(evaluation), threads=threads)
        self.images = 0

    def correct(self, state_dict: Mapping[str, torch.Tensor], *, label: str) -> int:
        """Return the number of held-out images whose top-1 prediction is right; failed images count as wrong."""
        import tempfile

        from imagebench.evaluate import evaluate_shard

        self.model.load_state_dict(state_dict, strict=True)
        with tempfile.TemporaryDirectory(prefix="imagebench-soup-") as folder:
            predictions = evaluate_shard(
                manifest_path=self.manifest, dataset_root=self.root, shard=0, num_shards=1,
                dataset="heldout", model_name=label, model=self.model, checkpoint_sha256=state_dict_sha256(state_dict),
                output=Path(folder) / "predictions.parquet", settings=self.settings,
                preprocessing_overrides=self.preprocessing,
            )  # fmt: skip
        self.images = predictions.height
        return int(predictions["correct_top1"].sum())


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Return a sha256 over the sorted keys, dtypes, shapes and bytes of ``state_dict``, for tensors held in memory."""
    import torch

    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().contiguous().cpu()
        digest.update(f"{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_ingredient(path: Path) -> dict[str, torch.Tensor]:
    """Read an ingredient's timm-keyed safetensors checkpoint."""
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def save_soup(
    *,
    state_dict: Mapping[str, torch.Tensor],
    output: Path,
    provenance_output: Path,
    record: dict[str, Any],
    model: torch.nn.Module,
) -> dict[str, Any]:
    """Write a soup's timm-keyed state dict as safetensors and its provenance JSON, both atomically.

    ``model`` is the model the soup was scored with; its head spec goes into the checkpoint's
    metadata, and its parameter count into the provenance.
    """
    from imagebench.checkpoints.load import save_checkpoint
    from imagebench.io import write_json_atomic

    full = {
        **record,
        "weights_format": "timm",
        "raw_sha256": None,
        "averaging": "float tensors: float64 mean cast back to the first ingredient's dtype; "
        "integer tensors: copied from the first ingredient",
        **save_checkpoint(dict(state_dict), output, model=model),
    }
    write_json_atomic(provenance_output, full)
    _LOGGER.info("wrote soup %s to %s", record.get("model"), output)
    return full


def _ingredient_records(
    soup: SoupSpec, files: Mapping[str, Path], heldout_correct: Mapping[str, int] | None, images: int | None
) -> list[dict[str, Any]]:
    from imagebench.io import sha256_file

    records = []
    for ingredient in soup.ingredients:
        entry = {
            "name": ingredient.name,
            "kind": ingredient.kind,
            "model": ingredient.member,
            "file": str(files[ingredient.name]),
            "sha256": sha256_file(files[ingredient.name]),
        }
        if heldout_correct is not None and images:
            entry["heldout_top1"] = percent(heldout_correct[ingredient.name], images)
        records.append(entry)
    return records


def build_uniform_soup(
    *, soup: SoupSpec, files: Mapping[str, Path], scorer: HeldoutScorer, splits: dict[str, Any],
    output: Path, provenance_output: Path,
) -> dict[str, Any]:  # fmt: skip
    """Average all ingredients of ``soup`` in config order, score the mean on the held-out split and save it."""
    running = RunningAverage()
    for ingredient in soup.ingredients:
        running.add(load_ingredient(files[ingredient.name]), name=ingredient.name)
    averaged = running.mean()
    correct = scorer.correct(averaged, label=soup.model_name("uniform"))

    record = {
        "model": soup.model_name("uniform"),
        "architecture": soup.architecture,
        "soup": soup.name,
        "recipe": "uniform",
        "ingredients": _ingredient_records(soup, files, None, None),
        "order": running.names,
        "used": running.names,
        "heldout_top1": percent(correct, scorer.images),
        "heldout_images": scorer.images,
        "splits": splits,
    }
    return save_soup(state_dict=averaged, output=output, provenance_output=provenance_output, record=record,
                     model=scorer.model)  # fmt: skip


def build_greedy_soup(
    *, soup: SoupSpec, files: Mapping[str, Path], heldout_correct: Mapping[str, int], heldout_images: int,
    scorer: HeldoutScorer, splits: dict[str, Any], output: Path, provenance_output: Path, steps_output: Path,
) -> dict[str, Any]:  # fmt: skip
    """Build the greedy soup of ``soup`` on the held-out split, save it, and write its steps as Parquet."""
    from imagebench.io import write_parquet_atomic

    def load(name: str) -> dict[str, torch.Tensor]:
        return load_ingredient(files[name])

    label = soup.model_name("greedy")
    averaged, steps = greedy_soup(
        order=[ingredient.name for ingredient in soup.ingredients],
        heldout_correct=heldout_correct,
        load=load,
        score=lambda state_dict: scorer.correct(state_dict, label=label),
    )
    images = heldout_images
    if scorer.images and scorer.images != images:
        raise DatasetError(
            f"soup {soup.name!r}: the held-out split has {scorer.images} images but the ingredients were scored on "
            f"{images}; rerun the soup_score_ingredient jobs"
        )
    frame = steps_frame(steps, images=images)
    write_parquet_atomic(frame, steps_output)

    record = {
        "model": label,
        "architecture": soup.architecture,
        "soup": soup.name,
        "recipe": "greedy",
        "ingredients": _ingredient_records(soup, files, heldout_correct, images),
        "order": [step.ingredient for step in steps],
        "used": [step.ingredient for step in steps if step.accepted],
        "steps": frame.to_dicts(),
        "heldout_top1": frame["best_top1"][-1],
        "heldout_images": images,
        "acceptance": "an ingredient is kept only when the held-out top-1 of the mean strictly increases",
        "splits": splits,
    }
    return save_soup(state_dict=averaged, output=output, provenance_output=provenance_output, record=record,
                     model=scorer.model)  # fmt: skip


def read_heldout_correct(paths: Mapping[str, Path]) -> tuple[dict[str, int], int]:
    """Return {ingredient: correct top-1 count} from the held-out prediction files, and the image count."""
    import polars as pl

    correct, sizes = {}, set()
    for name, path in paths.items():
        frame = pl.read_parquet(path, columns=["image_id", "correct_top1"])
        correct[name] = int(frame["correct_top1"].sum())
        sizes.add(frame.height)
    if len(sizes) != 1:
        raise DatasetError(f"held-out prediction files cover different numbers of images ({sorted(sizes)}); rerun them")
    return correct, sizes.pop()
