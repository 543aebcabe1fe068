"""Preference consistency: whether a reranker's pairwise preferences survive a change of order.

Definitions follow the InvariRank authors' RecSys '26 paper ("Position Bias Undermines
Preference Consistency in Listwise LLM-Based Reranking"), with their parameter names and
defaults. Per query, ``shown[p, i]`` is the candidate index at input position i in order p
and ``output[p, r]`` the candidate index the reranker put at rank r (both [P, n] arrays of
permutations of 0..n-1).

* **PPI** (pairwise preference instability): for each candidate pair (i, j), the orders are
  grouped into cells by the input-position buckets of i and of j, bucket =
  ``min(pos * num_buckets // n, num_buckets - 1)``; in every cell with at least
  ``minimum_bucket_observations`` orders, P(i ranked above j) is estimated; PPI(i, j) = max -
  min of those probabilities (pairs with fewer than two such cells are skipped); the query's
  PPI is the mean over pairs. 0 = a pair's preference never depends on where the two are
  shown; near 1 for a reranker that copies its input, for pairs whose cells cross buckets.
* **GPI** (global preference inconsistency): with p_ij the share of orders ranking i above j,
  a ranking's cost is the sum over the pairs it puts i above j of (1 - p_ij); GPI = the least
  cost of any ranking / number of pairs. 0 = every order gives the same ranking. The minimum
  is the exact weighted Kemeny optimum of :func:`harness.aggregation.kemeny` (an integer
  program up to 30 candidates; above that a local search, flagged ``exact=False``). The
  reference implementation starts from a win-score ranking and applies best pairwise swaps
  until none helps: a local optimum, so its GPI is an upper bound of this one; they agree
  when the swap search ends at an optimum (e.g. all orders give one ranking) and can differ
  otherwise, typically when the preferences hold cycles (intransitive majorities).

Both functions are pure; NaN means undefined (fewer than two candidates, or no pair with two
supported cells).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.aggregation import kemeny, pairwise_wins, positions

NUM_BUCKETS = 3
"""Input-position buckets of PPI (the reference's default)."""

MINIMUM_BUCKET_OBSERVATIONS = 1
"""Orders a (bucket, bucket) cell needs before its preference counts (the reference's default)."""


def position_bucket(position: np.ndarray | int, n: int, num_buckets: int = NUM_BUCKETS):
    """``min(position * num_buckets // n, num_buckets - 1)``: which third (by default) of an
    n-long input list a position falls in."""
    if num_buckets < 1 or n < 1:
        raise ValueError(f"need num_buckets >= 1 and n >= 1, got {num_buckets}, {n}")
    return np.minimum(np.asarray(position) * num_buckets // n, num_buckets - 1)


def preference_range(
    cells: np.ndarray, above: np.ndarray, *, minimum_bucket_observations: int = 1
) -> float:
    """Mean over pairs of (max - min) of P(above) across the cells with enough observations.

    ``cells[p, q]`` is the cell observation p of pair q falls in (small non-negative ints),
    ``above[p, q]`` whether the pair's first item was ranked above its second. Pairs with
    fewer than two supported cells are skipped; NaN when none is left. This is PPI's kernel;
    with one cell per repeat of the same order it gives the noise floor's PPI.
    """
    if minimum_bucket_observations < 1:
        raise ValueError("minimum_bucket_observations must be at least 1")
    cells = np.asarray(cells, dtype=np.int64)
    above = np.asarray(above, dtype=bool)
    if cells.shape != above.shape or cells.ndim != 2:
        raise ValueError(f"cells and above must be equal [P, pairs] arrays: {cells.shape}")
    if cells.size == 0:
        return float("nan")
    n_cells = int(cells.max()) + 1
    pairs = cells.shape[1]
    flat = cells + n_cells * np.arange(pairs)  # one slot per (pair, cell)
    totals = np.bincount(flat.ravel(), minlength=pairs * n_cells).reshape(pairs, n_cells)
    wins = np.bincount(
        flat.ravel(), weights=above.ravel().astype(np.float64), minlength=pairs * n_cells
    )
    wins = wins.reshape(pairs, n_cells)
    supported = totals >= minimum_bucket_observations
    share = np.divide(wins, totals, out=np.zeros_like(wins), where=totals > 0)
    high = np.where(supported, share, -np.inf).max(axis=1)
    low = np.where(supported, share, np.inf).min(axis=1)
    eligible = supported.sum(axis=1) >= 2
    return float(np.mean(high[eligible] - low[eligible])) if eligible.any() else float("nan")


def pairwise_preference_instability(
    shown: np.ndarray,
    output: np.ndarray,
    *,
    num_buckets: int = NUM_BUCKETS,
    minimum_bucket_observations: int = MINIMUM_BUCKET_OBSERVATIONS,
) -> float:
    """PPI of one query (see the module docstring); NaN when no pair has two supported cells."""
    position = positions(shown)  # [P, n] input position of each candidate
    rank = positions(output)  # [P, n] output rank of each candidate
    if position.shape != rank.shape:
        raise ValueError(f"shown and output differ in shape: {position.shape}, {rank.shape}")
    n = position.shape[1]
    if n < 2:
        return float("nan")
    bucket = position_bucket(position, n, num_buckets)
    u, v = np.triu_indices(n, 1)
    cells = bucket[:, u] * num_buckets + bucket[:, v]
    return preference_range(
        cells, rank[:, u] < rank[:, v], minimum_bucket_observations=minimum_bucket_observations
    )


def preference_shares(output: np.ndarray) -> np.ndarray:
    """[n, n] p_ij: the share of orders whose output ranks candidate i above candidate j."""
    return pairwise_wins(output) / len(output)


def global_preference_inconsistency(output: Sequence[Sequence[int]] | np.ndarray) -> float:
    """GPI of one query: the least weighted-Kemeny cost under shares p_ij, per pair; NaN for
    fewer than two candidates or fewer than two orders (nothing to be inconsistent with)."""
    output = np.asarray(output)
    shares = preference_shares(output)
    n = shares.shape[0]
    if n < 2 or output.shape[0] < 2:
        return float("nan")
    return kemeny(shares).cost / (n * (n - 1) // 2)
