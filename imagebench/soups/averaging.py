"""Averages of state dicts, and the greedy recipe that decides which ingredients join the mean.

Floating-point tensors are averaged in float64 and cast back to the first ingredient's
dtype. Integer buffers such as ``num_batches_tracked`` are copied from the first ingredient,
which for the greedy soup is the best one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imagebench.errors import CheckpointError

if TYPE_CHECKING:
    import polars as pl
    import torch

_LOGGER = logging.getLogger(__name__)


class RunningAverage:
    """A running float64 sum of state dicts with the same keys and shapes, and the first one's integer buffers."""

    def __init__(self) -> None:
        self.count = 0
        self.names: list[str] = []
        self._sums: dict[str, torch.Tensor] = {}
        self._reference: dict[str, torch.Tensor] = {}

    def add(self, state_dict: Mapping[str, torch.Tensor], *, name: str) -> None:
        """Add ``state_dict`` (ingredient ``name``) to the sum; raise CheckpointError when it does not fit the first."""
        if self.count == 0:
            self._reference = {key: tensor.detach().clone() for key, tensor in state_dict.items()}
            self._sums = {key: tensor.detach().double() for key, tensor in state_dict.items() if tensor.is_floating_point()}
        else:
            self._check(state_dict, name=name)
            for key in self._sums:
                self._sums[key] += state_dict[key].detach().double()
        self.count += 1
        self.names.append(name)

    def with_added(self, state_dict: Mapping[str, torch.Tensor], *, name: str) -> RunningAverage:
        """Return a copy with ``state_dict`` added, leaving this one unchanged."""
        copy = RunningAverage()
        copy.count, copy.names = self.count, list(self.names)
        copy._reference = self._reference
        copy._sums = {key: tensor.clone() for key, tensor in self._sums.items()}
        copy.add(state_dict, name=name)
        return copy

    def mean(self) -> dict[str, torch.Tensor]:
        """Return the mean: float tensors cast back to the first ingredient's dtype, other tensors copied from it."""
        if self.count == 0:
            raise ValueError("the average of no state dicts is undefined; add at least one")
        averaged = {}
        for key, tensor in self._reference.items():
            if key in self._sums:
                averaged[key] = (self._sums[key] / self.count).to(tensor.dtype)
            else:
                averaged[key] = tensor.clone()
        return averaged

    def _check(self, state_dict: Mapping[str, torch.Tensor], *, name: str) -> None:
        first = self.names[0]
        missing = sorted(set(self._reference) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(self._reference))
        if missing or unexpected:
            raise CheckpointError(
                f"ingredient {name!r} has other keys than {first!r}: missing {missing[:5]}, unexpected {unexpected[:5]}; "
                "only checkpoints of one architecture can be averaged"
            )
        for key, reference in self._reference.items():
            tensor = state_dict[key]
            if tuple(tensor.shape) != tuple(reference.shape) or tensor.is_floating_point() != reference.is_floating_point():
                raise CheckpointError(
                    f"ingredient {name!r}: {key} is {tensor.dtype} {tuple(tensor.shape)} but {reference.dtype} "
                    f"{tuple(reference.shape)} in {first!r}; only checkpoints of one architecture can be averaged"
                )


def average_state_dicts(state_dicts: Sequence[tuple[str, Mapping[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    """Return the uniform mean of the named ``state_dicts``, as RunningAverage computes it."""
    running = RunningAverage()
    for name, state_dict in state_dicts:
        running.add(state_dict, name=name)
    return running.mean()


# ------------------------------------------------------------------------------ greedy


@dataclass(frozen=True)
class GreedyStep:
    """One candidate of the greedy soup; counts are correct top-1 predictions on the held-out split."""

    step: int
    ingredient: str
    ingredient_correct: int
    candidate_correct: int
    accepted: bool
    soup_size: int
    best_correct: int


def rank_ingredients(heldout_correct: Mapping[str, int], order: Sequence[str]) -> list[str]:
    """Return ``order`` sorted by held-out correct count, best first; ties keep their order in ``order``."""
    missing = [name for name in order if name not in heldout_correct]
    if missing:
        raise ValueError(f"no held-out score for ingredient(s) {missing}")
    return sorted(order, key=lambda name: -heldout_correct[name])


def greedy_soup(
    *,
    order: Sequence[str],
    heldout_correct: Mapping[str, int],
    load: Callable[[str], Mapping[str, torch.Tensor]],
    score: Callable[[Mapping[str, torch.Tensor]], int],
) -> tuple[dict[str, torch.Tensor], list[GreedyStep]]:
    """Build the greedy soup and return its state dict and every step.

    ``load(name)`` returns an ingredient's state dict and ``score(state_dict)`` its correct count
    on the held-out split. The best ingredient starts the soup with its own count. Each next
    one is kept only when the mean with it scores STRICTLY more than the soup so far, so an
    ingredient that ties is rejected.
    """
    ranked = rank_ingredients(heldout_correct, order)
    running = RunningAverage()
    running.add(load(ranked[0]), name=ranked[0])
    best = heldout_correct[ranked[0]]
    steps = [GreedyStep(1, ranked[0], best, best, True, 1, best)]
    _LOGGER.info("greedy soup starts from %s (%d correct on the held-out split)", ranked[0], best)

    for position, name in enumerate(ranked[1:], start=2):
        candidate = running.with_added(load(name), name=name)
        correct = score(candidate.mean())
        accepted = correct > best
        if accepted:
            running, best = candidate, correct
        steps.append(GreedyStep(position, name, heldout_correct[name], correct, accepted, running.count, best))
        _LOGGER.info("greedy step %d: %s gives %d correct, %s (best %d)", position, name, correct,
                     "kept" if accepted else "rejected", best)  # fmt: skip
    return running.mean(), steps


def steps_frame(steps: Sequence[GreedyStep], *, images: int) -> pl.DataFrame:
    """Return the greedy steps as a table with held-out top-1 in percent."""
    import polars as pl

    return pl.DataFrame(
        {
            "step": [step.step for step in steps],
            "ingredient": [step.ingredient for step in steps],
            "ingredient_top1": [percent(step.ingredient_correct, images) for step in steps],
            "candidate_top1": [percent(step.candidate_correct, images) for step in steps],
            "accepted": [step.accepted for step in steps],
            "soup_size": [step.soup_size for step in steps],
            "best_top1": [percent(step.best_correct, images) for step in steps],
            "heldout_images": [images] * len(steps),
        },
        schema={"step": pl.Int32, "ingredient": pl.String, "ingredient_top1": pl.Float64, "candidate_top1": pl.Float64,
                "accepted": pl.Boolean, "soup_size": pl.Int32, "best_top1": pl.Float64, "heldout_images": pl.Int64},
    )  # fmt: skip


def percent(correct: int, images: int) -> float:
    return round(100.0 * correct / images, 3)
