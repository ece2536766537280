"""Confidence intervals for accuracies."""

from __future__ import annotations

import math

# Two-sided 95% normal quantile.
Z_95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, *, z: float = Z_95) -> tuple[float, float]:
    """Return the Wilson score interval for a binomial proportion, as fractions in [0, 1].

    Unlike the normal approximation, the Wilson interval stays inside [0, 1]
    and keeps close to its nominal coverage at accuracies near 0 or 1 and at
    the small sample sizes of a quick benchmark (Brown, Cai and DasGupta,
    Statistical Science 16(2), 2001).
    """
    if trials <= 0:
        return (math.nan, math.nan)
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must lie in [0, {trials}], got {successes}")

    proportion = successes / trials
    denominator = 1 + z**2 / trials
    centre = (proportion + z**2 / (2 * trials)) / denominator
    half_width = z * math.sqrt(proportion * (1 - proportion) / trials + z**2 / (4 * trials**2)) / denominator
    return (max(0.0, centre - half_width), min(1.0, centre + half_width))
