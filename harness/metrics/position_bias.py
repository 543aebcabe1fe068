"""Position bias: how an item's input position shapes its output rank.

Per query, ``shown[p, i]`` is the candidate index at input position i in permutation p and
``output[p, r]`` the candidate index the reranker put at rank r; both are [P, n] arrays whose
rows are permutations of 0..n-1. Counts are indexed by absolute input position, so queries
with different n pool by adding each query's counts into the first n_q slots of longer arrays
(``pool_exposure``); the expected share then varies per position and is passed in explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _output_rank_by_position(shown: np.ndarray, output: np.ndarray) -> np.ndarray:
    """[P, n] output rank of the item shown at each input position."""
    shown, output = np.asarray(shown), np.asarray(output)
    if shown.ndim != 2 or shown.shape != output.shape:
        raise ValueError(
            f"shown and output must be equal [P, n] arrays: {shown.shape}, {output.shape}"
        )
    n = shown.shape[1]
    identity = np.arange(n)
    for name, arr in (("shown", shown), ("output", output)):
        if not (np.sort(arr, axis=1) == identity).all():
            raise ValueError(f"every row of {name} must be a permutation of 0..{n - 1}")
    rank_of = np.empty_like(output)
    np.put_along_axis(rank_of, output, np.broadcast_to(identity, output.shape), axis=1)
    return np.take_along_axis(rank_of, shown, axis=1)


def rank_given_position_counts(shown: np.ndarray, output: np.ndarray) -> np.ndarray:
    """[n, n] counts C[i, r] of rows where the item shown at position i was output at rank r.

    Row-normalised (after summing queries of equal n) it is P(output rank | input position):
    flat for an order-invariant reranker, diagonal for one that copies its input.
    """
    rank = _output_rank_by_position(shown, output)
    n = rank.shape[1]
    flat = (np.arange(n) * n + rank).ravel()
    return np.bincount(flat, minlength=n * n).reshape(n, n)


def rank_given_position(counts: np.ndarray) -> np.ndarray:
    """P(output rank | input position): the counts of :func:`rank_given_position_counts`
    (summed over queries of equal n) divided by their row sums (an empty row stays 0)."""
    counts = np.asarray(counts, dtype=np.float64)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def exposure_counts(
    shown: np.ndarray, output: np.ndarray, k: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Per input position: (hits = rows whose item shown there lands in the output top-k, trials).

    With no position bias the expected share hits/trials is min(k, n)/n at every position.
    """
    rank = _output_rank_by_position(shown, output)
    hits = (rank < k).sum(0)
    return hits, np.full(rank.shape[1], rank.shape[0], dtype=hits.dtype)


def pool_exposure(
    per_query: Sequence[tuple[np.ndarray, np.ndarray]], k: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum (hits, trials) of queries with possibly different n by absolute input position.

    Returns (hits, trials, expected) with expected[i] the trials-weighted mean of min(k, n_q)/n_q
    over the queries that have a position i (NaN where no query does).
    """
    pool = ExposurePool(k)
    for exposure in per_query:
        pool.add(exposure)
    return pool.pooled()


class ExposurePool:
    """:func:`pool_exposure` one query at a time, so a run's queries need not all be held."""

    def __init__(self, k: int = 10) -> None:
        self.k = k
        self.hits, self.trials, self.weighted = np.zeros(0), np.zeros(0), np.zeros(0)

    def add(self, exposure: tuple[np.ndarray, np.ndarray]) -> None:
        h, t = exposure
        n = len(h)
        if n > len(self.hits):
            grow = n - len(self.hits)
            self.hits, self.trials, self.weighted = (
                np.pad(a, (0, grow)) for a in (self.hits, self.trials, self.weighted)
            )
        self.hits[:n] += h
        self.trials[:n] += t
        self.weighted[:n] += np.asarray(t) * (min(self.k, n) / n)

    def pooled(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(hits, trials, expected) as :func:`pool_exposure` returns them."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.hits, self.trials, self.weighted / self.trials


def marginal_exposure_deviation(
    hits: np.ndarray, trials: np.ndarray, expected: np.ndarray | float
) -> np.ndarray:
    """Per-position exposure share minus its expectation; NaN where a position had no trials."""
    hits, trials = np.asarray(hits, dtype=np.float64), np.asarray(trials, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(trials > 0, hits / trials, np.nan)
    return share - expected


def position_bias_mad(hits: np.ndarray, trials: np.ndarray, expected: np.ndarray | float) -> float:
    """Mean absolute exposure deviation over positions with trials, each position weighted equally.

    0 for an order-invariant reranker under a balanced design (e.g. all cyclic shifts);
    2k(n-k)/n^2 for one that copies its input order. A position whose expected share is 1
    (n <= k: every candidate reaches the top k whatever the reranker does) says nothing about
    bias and is left out; NaN when no position is left (undefined, not "no bias").
    """
    dev = np.abs(marginal_exposure_deviation(hits, trials, expected))
    informative = np.broadcast_to(np.asarray(expected, dtype=np.float64) < 1, dev.shape)
    dev = dev[~np.isnan(dev) & informative]
    return float(dev.mean()) if dev.size else float("nan")


def no_bias_mad(trials: np.ndarray, expected: np.ndarray | float) -> float:
    """Expected ``position_bias_mad`` of a reranker with NO position bias under random orders.

    With independent uniformly random orders, the item shown at a position reaches the top k
    with probability ``expected``, independently per order, so its hit count is
    Binomial(trials, expected) and the measured deviation is pure sampling noise. This exact
    expectation, E|X/t - p| averaged over positions, is the noise floor to read a random-order
    MAD against. (Balanced designs such as cyclic have a floor of 0 instead.) When pooled
    queries differ in n, the hit count is a sum of binomials with different p; it is modelled
    as one binomial at the trials-weighted mean p, a close approximation.
    """
    from scipy.stats import binom

    trials = np.asarray(trials, dtype=np.int64)
    expected = np.broadcast_to(np.asarray(expected, dtype=np.float64), trials.shape)
    floors = []
    for t, p in zip(trials, expected, strict=True):
        if t <= 0 or np.isnan(p):
            continue
        x = np.arange(t + 1)
        floors.append(float(np.sum(binom.pmf(x, t, p) * np.abs(x / t - p))))
    return float(np.mean(floors)) if floors else float("nan")


def no_bias_band(
    trials: np.ndarray, expected: np.ndarray | float, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Per position, the central ``level`` range of the exposure share of a reranker with NO
    position bias under random orders: hits ~ Binomial(trials, expected), so the share lies
    in [q(0.025), q(0.975)] / trials. A measured share outside it is more than noise. NaN
    where a position had no trials."""
    from scipy.stats import binom

    trials = np.asarray(trials, dtype=np.float64)
    expected = np.broadcast_to(np.asarray(expected, dtype=np.float64), trials.shape)
    tail = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        valid = (trials > 0) & ~np.isnan(expected)
        low = np.where(valid, binom.ppf(tail, trials, expected) / trials, np.nan)
        high = np.where(valid, binom.ppf(1.0 - tail, trials, expected) / trials, np.nan)
    return low, high
