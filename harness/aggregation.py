"""Rank aggregation: one consensus ranking from many rankings of the same items.

Shared by the metrics (GPI is the cost of the best consensus) and the debiasing meta-rerankers
(permutation self-consistency aggregates its internal shuffles). Items are the integers
``0..n-1``; a ranking lists them best first. Callers map their ids to indices.

Kemeny is exact (an integer program, ``scipy.optimize.milp``) up to ``exact_limit`` items and a
stated local search above it; Borda and reciprocal-rank fusion are closed forms. All functions
are pure and deterministic: ties are broken by the smaller item index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

KEMENY_EXACT_LIMIT = 30
"""Largest item count solved exactly by default (n=30: 435 variables, 4,060 triangle rows)."""

RRF_K = 60
"""Reciprocal-rank fusion constant of Cormack et al. (2009), also used by perm-sc."""


def _check_rankings(rankings: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """(m, n) int array of rankings; ValueError unless each is a permutation of 0..n-1."""
    if len(rankings) == 0:
        raise ValueError("need at least one ranking to aggregate")
    try:
        array = np.asarray(rankings, dtype=np.int64)
    except ValueError:  # ragged
        raise ValueError("rankings must all have the same length") from None
    if array.ndim != 2:
        raise ValueError(f"rankings must form an (m, n) array, got shape {array.shape}")
    if not (np.sort(array, axis=1) == np.arange(array.shape[1])).all():
        raise ValueError(f"each ranking must be a permutation of 0..{array.shape[1] - 1}")
    return array


def positions(rankings: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """(m, n) array: ``positions[r, i]`` is the 0-based rank of item i in ranking r."""
    array = _check_rankings(rankings)
    out = np.empty_like(array)
    rows = np.arange(array.shape[0])[:, None]
    out[rows, array] = np.arange(array.shape[1])
    return out


def pairwise_wins(rankings: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """(n, n) float matrix: ``wins[i, j]`` = how many rankings put item i above item j."""
    pos = positions(rankings)
    return (pos[:, :, None] < pos[:, None, :]).sum(axis=0).astype(np.float64)


def ranking_cost(order: Sequence[int], weights: np.ndarray) -> float:
    """Disagreement of ``order`` with pairwise weights: sum of ``weights[j, i]`` over i above j.

    With ``weights = pairwise_wins(rankings)`` this is the total Kendall distance of ``order`` to
    the rankings; with preference shares ``p_ij`` it is GPI's weighted cost.
    """
    idx = np.asarray(order, dtype=np.int64)
    ordered = weights[np.ix_(idx, idx)]  # ordered[a, b] = weights[order[a], order[b]]
    return float(np.tril(ordered, k=-1).sum())


@dataclass(frozen=True)
class Consensus:
    """A consensus ranking, its disagreement cost, and whether the cost is provably minimal."""

    order: tuple[int, ...]
    cost: float
    exact: bool


def _net_win_order(weights: np.ndarray) -> list[int]:
    """Copeland-style start: items by net pairwise weight, ties by index."""
    net = weights.sum(axis=1) - weights.sum(axis=0)
    return sorted(range(weights.shape[0]), key=lambda i: (-net[i], i))


def _local_search(start: list[int], weights: np.ndarray) -> list[int]:
    """Best single-item move (remove and reinsert anywhere) until none lowers the cost.

    Moving item x from position a to b only changes its pairs with the items it jumps over, so
    the change of every move is a difference of one row's prefix sums: each step scores all
    n^2 moves at once in O(n^2) array work. Among moves within 1e-12 of the best, the first in
    reading order wins (item position a, then up moves nearest first, then down moves), so the
    result is deterministic.
    """
    order = np.asarray(start, dtype=np.int64)
    n = len(order)
    rows = np.arange(n)
    cols = np.arange(n)
    above = cols[None, :] < rows[:, None]  # b < a: an up move
    below = ~above
    # Reading order of moves: for each a, up moves b = a-1 .. 0, then down moves b = a+1 .. n-1.
    reading = (
        np.where(above, rows[:, None] - 1 - cols[None, :], cols[None, :] - 1) + rows[:, None] * n
    )
    # anti[i, j] = weights[j, i] - weights[i, j]: the change when item i jumps over item j
    # upwards, the same subtraction per pair as taking it after gathering (same floats).
    anti = weights.T - weights
    prefix = np.zeros((n, n + 1))
    delta = np.empty((n, n))
    while True:
        gain = anti.take(order, axis=0).take(order, axis=1)  # gain[a, b]: order[a] over order[b]
        np.cumsum(gain, axis=1, out=prefix[:, 1:])
        diagonal = prefix[rows, rows][:, None]  # sum of gain[a, :a]
        after = prefix[rows, rows + 1][:, None]  # sum of gain[a, :a + 1]
        np.subtract(diagonal, prefix[:, :n], out=delta, where=above)
        np.subtract(after, prefix[:, 1:], out=delta, where=below)
        delta[rows, rows] = np.inf
        best = delta.min()
        if not best < -1e-12:
            return order.tolist()
        near = np.flatnonzero(delta <= best + 1e-12)  # never the diagonal (inf)
        a, b = divmod(int(near[np.argmin(reading.ravel()[near])]), n)
        rest = np.delete(order, a)
        order = np.concatenate((rest[:b], order[a : a + 1], rest[b:]))


def _kemeny_milp(weights: np.ndarray) -> list[int]:
    """Exact weighted Kemeny ranking by integer programming.

    Variable x_ij (i < j) is 1 when i is above j. Cost = sum_{i<j} x_ij w_ji + (1 - x_ij) w_ij;
    transitivity: 0 <= x_ij + x_jk - x_ik <= 1 for every triple i < j < k.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_array

    n = weights.shape[0]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    var = {pair: v for v, pair in enumerate(pairs)}
    cost = np.array([weights[j, i] - weights[i, j] for i, j in pairs])
    rows, cols, vals = [], [], []
    r = 0
    for i in range(n):
        for j in range(i + 1, n):
            for k in range(j + 1, n):
                rows += [r, r, r]
                cols += [var[i, j], var[j, k], var[i, k]]
                vals += [1.0, 1.0, -1.0]
                r += 1
    constraints = []
    if r:
        matrix = coo_array((vals, (rows, cols)), shape=(r, len(pairs))).tocsr()
        constraints.append(LinearConstraint(matrix, 0, 1))
    result = milp(
        cost,
        constraints=constraints,
        integrality=np.ones(len(pairs)),
        bounds=Bounds(0, 1),
    )
    if not result.success:  # pragma: no cover - HiGHS solves every feasible instance here
        raise RuntimeError(f"Kemeny integer program failed: {result.message}")
    above = np.round(result.x).astype(bool)
    wins = np.zeros(n, dtype=np.int64)  # a transitive tournament: rank = number of losses
    for (i, j), i_above in zip(pairs, above, strict=True):
        wins[i if i_above else j] += 1
    return sorted(range(n), key=lambda i: (-wins[i], i))


def kemeny(weights: np.ndarray, *, exact_limit: int = KEMENY_EXACT_LIMIT) -> Consensus:
    """The ranking with the least weighted pairwise disagreement (weighted Kemeny-Young).

    ``weights[i, j]`` is the support for i above j (counts from :func:`pairwise_wins`, or shares).
    Up to ``exact_limit`` items the integer program gives a provable optimum; above it, a
    net-wins start improved by best single-item moves (a local optimum, ``exact=False``).
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"weights must be a square matrix, got shape {w.shape}")
    n = w.shape[0]
    if n <= 1:
        return Consensus(tuple(range(n)), 0.0, True)
    exact = n <= exact_limit
    order = _kemeny_milp(w) if exact else _local_search(_net_win_order(w), w)
    return Consensus(tuple(order), ranking_cost(order, w), exact)


def kemeny_rankings(
    rankings: Sequence[Sequence[int]], *, exact_limit: int = KEMENY_EXACT_LIMIT
) -> Consensus:
    """Kemeny consensus of rankings; the cost is the total Kendall distance to them."""
    return kemeny(pairwise_wins(rankings), exact_limit=exact_limit)


def borda(rankings: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Borda count: each ranking gives an item ``n - 1 - rank`` points; most points first."""
    pos = positions(rankings)
    points = (pos.shape[1] - 1 - pos).sum(axis=0)
    return tuple(sorted(range(pos.shape[1]), key=lambda i: (-points[i], i)))


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> tuple[int, ...]:
    """RRF: each ranking gives an item ``1 / (k + rank)`` with 1-based ranks; most first."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    pos = positions(rankings)
    score = (1.0 / (k + 1 + pos)).sum(axis=0)
    return tuple(sorted(range(pos.shape[1]), key=lambda i: (-score[i], i)))
