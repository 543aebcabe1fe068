"""Seeded percentile-bootstrap confidence intervals with the query as the resampling unit."""

from __future__ import annotations

import itertools

import numpy as np

_NAN3 = (float("nan"),) * 3
_BLOCK_VALUES = 1 << 20  # resampled values held at once (8 MB of indices)


def _check(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1 or not 0 < confidence < 1:
        raise ValueError(
            f"need n_resamples >= 1 and 0 < confidence < 1, got {n_resamples}, {confidence}"
        )


def _interval(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_mean_ci(
    values: np.ndarray, *, seed: int, n_resamples: int = 2000, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(mean, low, high) of per-query values by percentile bootstrap, reproducible via ``seed``.

    NaNs (queries a metric is undefined for) are dropped first, so the interval describes the
    ``np.count_nonzero(~np.isnan(values))`` remaining queries; report that count alongside.
    One value gives (v, v, v) and none gives NaNs, since there is nothing to resample.
    """
    _check(n_resamples, confidence)
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        return _NAN3
    mean = float(v.mean())
    if v.size == 1:
        return mean, mean, mean
    means = _resampled_means(v, np.random.default_rng(seed), n_resamples)
    return (mean, *_interval(means, confidence))


def _resampled_means(v: np.ndarray, rng: np.random.Generator, n_resamples: int) -> np.ndarray:
    """The means of ``n_resamples`` resamples (with replacement) of ``v``, drawn from ``rng``."""
    # Resamples drawn a block of rows at a time: the same stream as one (n_resamples, n)
    # draw, so the same interval, without its index matrix (320 MB for 20,000 queries, and
    # as much again for the values it gathers). Blocks have at least 2 rows: NumPy sums a
    # lone row in another order, so its mean could differ in the last bit.
    bounds = [*range(0, n_resamples, max(2, _BLOCK_VALUES // v.size)), n_resamples]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    return np.concatenate(
        [
            v[rng.integers(0, v.size, size=(end - start, v.size))].mean(1)
            for start, end in itertools.pairwise(bounds)
        ]
    )


def bootstrap_macro_mean_ci(
    groups: list[np.ndarray], *, seed: int, n_resamples: int = 2000, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(mean, low, high) of the mean of group means (each group weighs the same, e.g. the tasks
    of a suite), by a stratified percentile bootstrap: queries are resampled within their own
    group, so every resample keeps each group's size. NaNs are dropped per group and empty
    groups left out; a group of one value adds no spread."""
    _check(n_resamples, confidence)
    kept = [g[~np.isnan(g)] for g in (np.asarray(x, dtype=np.float64).ravel() for x in groups)]
    kept = [g for g in kept if g.size]
    if not kept:
        return _NAN3
    mean = float(np.mean([g.mean() for g in kept]))
    rng = np.random.default_rng(seed)
    means = np.mean(
        [
            _resampled_means(g, rng, n_resamples) if g.size > 1 else np.full(n_resamples, g[0])
            for g in kept
        ],
        axis=0,
    )
    return (mean, *_interval(means, confidence))
