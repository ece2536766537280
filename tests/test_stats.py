import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagebench.stats import wilson_interval


def test_wilson_known_value():
    # 88 of 100: the Wilson interval is (0.8019, 0.9300) to four places.
    low, high = wilson_interval(88, 100)
    assert low == pytest.approx(0.8019, abs=1e-4)
    assert high == pytest.approx(0.9300, abs=1e-4)


def test_wilson_bounds_at_extremes():
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(10, 10)[0] < 1.0


def test_wilson_empty_is_nan():
    low, high = wilson_interval(0, 0)
    assert math.isnan(low)
    assert math.isnan(high)


def test_wilson_rejects_impossible_count():
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


@given(st.integers(min_value=1, max_value=100_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_estimate(counts):
    successes, trials = counts
    low, high = wilson_interval(successes, trials)
    assert 0.0 <= low <= successes / trials + 1e-12
    assert successes / trials - 1e-12 <= high <= 1.0
