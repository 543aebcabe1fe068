"""Bootstrap CIs: reproducible, sensible coverage, and explicit degenerate cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.metrics import bootstrap
from harness.metrics.bootstrap import bootstrap_mean_ci

VALUES = np.random.default_rng(0).normal(0.5, 0.2, 60)


def test_reproducible_with_seed():
    assert bootstrap_mean_ci(VALUES, seed=7) == bootstrap_mean_ci(VALUES, seed=7)
    assert bootstrap_mean_ci(VALUES, seed=7) != bootstrap_mean_ci(VALUES, seed=8)


def test_interval_contains_mean_and_has_normal_width():
    mean, low, high = bootstrap_mean_ci(VALUES, seed=1, n_resamples=4000)
    assert mean == pytest.approx(VALUES.mean())
    assert low < mean < high
    # percentile bootstrap of a mean ~ mean +- 1.96 * sd / sqrt(n)
    half = 1.96 * VALUES.std() / math.sqrt(VALUES.size)
    assert high - low == pytest.approx(2 * half, rel=0.1)
    narrow = bootstrap_mean_ci(VALUES, seed=1, n_resamples=4000, confidence=0.5)
    assert low < narrow[1] < narrow[2] < high


def test_nans_are_dropped():
    with_nan = np.concatenate([VALUES, [np.nan, np.nan]])
    assert bootstrap_mean_ci(with_nan, seed=3) == bootstrap_mean_ci(VALUES, seed=3)


def test_degenerate_inputs():
    assert bootstrap_mean_ci(np.array([0.3]), seed=0) == (0.3, 0.3, 0.3)
    assert bootstrap_mean_ci(np.array([0.3, np.nan]), seed=0) == (0.3, 0.3, 0.3)
    assert all(math.isnan(x) for x in bootstrap_mean_ci(np.array([]), seed=0))
    assert all(math.isnan(x) for x in bootstrap_mean_ci(np.array([np.nan]), seed=0))
    assert bootstrap_mean_ci(np.full(5, 2.0), seed=0) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError):
        bootstrap_mean_ci(VALUES, seed=0, confidence=1.0)
    with pytest.raises(ValueError):
        bootstrap_mean_ci(VALUES, seed=0, n_resamples=0)


@pytest.mark.parametrize(("n", "resamples"), [(300, 2000), (300, 2002), (777, 2000), (5000, 7)])
def test_blocked_resampling_gives_the_one_shot_interval_exactly(monkeypatch, n, resamples):
    """Drawn a block of rows at a time (bounded memory), the resamples are the same stream as
    one (n_resamples, n) draw, so the interval is bit-identical to the textbook one-shot form
    (blocks of 3 rows, the last one of 2 or of 3 + 1; blocks of 2 rows, the last one of 3)."""
    monkeypatch.setattr(bootstrap, "_BLOCK_VALUES", 1000)
    values = np.random.default_rng(1).normal(size=n)
    indices = np.random.default_rng(7).integers(0, n, size=(resamples, n))
    tail = (1 - 0.95) / 2
    low, high = np.quantile(values[indices].mean(1), [tail, 1 - tail])
    got = bootstrap.bootstrap_mean_ci(values, seed=7, n_resamples=resamples)
    assert got == (values.mean(), low, high)


def test_macro_mean_ci_weighs_groups_equally_and_resamples_within_each():
    from harness.metrics.bootstrap import bootstrap_macro_mean_ci

    rng = np.random.default_rng(3)
    small, large = rng.random(5), rng.random(40) + 1.0
    mean, low, high = bootstrap_macro_mean_ci([small, large], seed=7, n_resamples=300)
    assert mean == pytest.approx((small.mean() + large.mean()) / 2)  # not the pooled mean
    # a plain loop: each resample draws every group's queries from that group only
    draw = np.random.default_rng(7)
    per_group = [g[draw.integers(0, g.size, size=(300, g.size))].mean(1) for g in (small, large)]
    expected = np.quantile(np.mean(per_group, axis=0), [0.025, 0.975])
    assert (low, high) == pytest.approx(tuple(expected), abs=1e-12)
    # one group is the ordinary bootstrap; NaNs and empty groups are left out
    assert bootstrap_macro_mean_ci([small], seed=1) == bootstrap_mean_ci(small, seed=1)
    with_gaps = bootstrap_macro_mean_ci([np.append(small, np.nan), np.array([np.nan])], seed=1)
    assert with_gaps == bootstrap_mean_ci(small, seed=1)
