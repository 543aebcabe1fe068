"""Agreement between reranker outputs for different input orders of the same candidates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import kendalltau


def _rank_vector(ranking: Sequence[str], index: dict[str, int]) -> np.ndarray:
    """Rank of each candidate (ordered as in ``index``) in ``ranking``; ValueError on mismatch."""
    if len(ranking) != len(index) or set(ranking) != index.keys():
        raise ValueError("rankings must be permutations of the same set of distinct ids")
    ranks = np.empty(len(index), dtype=np.int64)
    ranks[[index[doc] for doc in ranking]] = np.arange(len(ranking))
    return ranks


def kendall_tau(a: Sequence[str], b: Sequence[str]) -> float:
    """Kendall tau-b between two full rankings of the same ids; NaN when n < 2 (no pair of
    candidates: tau-b is 0/0, as SciPy says, not agreement).

    Not top-heavy: a swap at ranks 1<->2 costs the same as one at 19<->20; pair it with RBO.
    """
    index = {doc: i for i, doc in enumerate(a)}
    if len(index) != len(a):
        raise ValueError("rankings must be permutations of the same set of distinct ids")
    rb = _rank_vector(b, index)
    if len(a) < 2:
        return float("nan")
    return float(kendalltau(np.arange(len(a)), rb).statistic)


def _rbo_ext(overlap: np.ndarray, p: float) -> np.ndarray:
    """RBO_ext from overlaps X_1..X_k (last axis), Webber et al. 2010 eq. 32 (even lists)."""
    k = overlap.shape[-1]
    depth = np.arange(1, k + 1)
    agreement = overlap / depth
    return agreement[..., -1] * p**k + (1 - p) / p * (agreement * p**depth).sum(-1)


def rbo(a: Sequence[str], b: Sequence[str], p: float = 0.9, depth: int = 10) -> float:
    """Extrapolated rank-biased overlap at depth k = min(depth, len(a), len(b)).

    Top-heavy (p=0.9 puts ~86% of the weight on the top 10), 1.0 for identical prefixes and 0.0
    for disjoint ones. Lists may hold different ids; neither may be empty or repeat an id.
    """
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    k = min(depth, len(a), len(b))
    if k < 1:
        raise ValueError("rbo needs non-empty rankings and depth >= 1")
    seen_a: set[str] = set()
    seen_b: set[str] = set()
    overlap = np.empty(k)
    x = 0
    for d in range(k):
        x += (a[d] == b[d]) + (a[d] in seen_b) + (b[d] in seen_a)
        seen_a.add(a[d])
        seen_b.add(b[d])
        overlap[d] = x
    if len(seen_a) != k or len(seen_b) != k:
        raise ValueError("rankings must not repeat an id")
    return float(_rbo_ext(overlap, p))


def top_k_jaccard(a: Sequence[str], b: Sequence[str], k: int = 10) -> float:
    """|top-k(a) & top-k(b)| / |top-k(a) | top-k(b)| as sets; 1.0 when both are empty."""
    sa, sb = set(a[:k]), set(b[:k])
    union = len(sa | sb)
    return len(sa & sb) / union if union else 1.0


def top1_agreement(a: Sequence[str], b: Sequence[str]) -> float:
    """1.0 when both rankings put the same id first, else 0.0."""
    if not a or not b:
        raise ValueError("top1_agreement needs non-empty rankings")
    return float(a[0] == b[0])


_PAIR_CHUNK_ELEMENTS = 4_000_000


def shown_order_taus(shown: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Kendall tau-b between each shown order and its output, row by row: ``kendall_tau`` of
    (the ids in shown order, the ranking), with the same float operations as SciPy's
    (``(C - D) / sqrt(N) / sqrt(N)``, clipped to [-1, 1]; no ties in permutations), so the
    values are bit-identical, computed for all rows at once. ``shown`` and ``output`` are
    ``[m, n]`` candidate indices; NaN when n < 2 (as ``kendall_tau``)."""
    m, n = shown.shape
    if n < 2:
        return np.full(m, np.nan)
    rank = np.empty_like(output)
    rank[np.arange(m)[:, None], output] = np.arange(n)  # output rank of each candidate
    seen = np.take_along_axis(rank, shown, axis=1)  # output rank, in shown order
    u, v = np.triu_indices(n, 1)
    pairs = len(u)
    concordance = np.sign(seen[:, v] - seen[:, u]).sum(axis=1, dtype=np.int64)
    root = np.sqrt(np.float64(pairs))
    return np.minimum(1.0, np.maximum(-1.0, concordance / root / root))


def pairwise_stability(
    rankings: Sequence[Sequence[str]], k: int = 10, p: float = 0.9
) -> dict[str, float]:
    """Mean Kendall tau, RBO@k, top-1 agreement, top-k Jaccard, Spearman's rho and exact
    top-k set agreement over all unordered pairs.

    ``rankings`` are outputs for different input orders of one query, so all must be
    permutations of the same ids. With fewer than 2 rankings there is no pair to compare and
    every value is NaN (absent, not perfect). With at most ``k`` candidates every top k is
    the whole set, so top-k Jaccard and set agreement are NaN too (they would read 1, perfect
    agreement, by construction). Vectorised over pairs via an int rank matrix.
    """
    if not 0 < p < 1 or k < 1:
        raise ValueError(f"need 0 < p < 1 and k >= 1, got p={p}, k={k}")
    keys = (
        "kendall_tau", f"rbo@{k}", "top1_agreement", f"top{k}_jaccard", "spearman",
        f"top{k}_set_agreement",
    )  # fmt: skip
    if len(rankings) < 2:
        return dict.fromkeys(keys, float("nan"))
    index = {doc: i for i, doc in enumerate(rankings[0])}
    ranks = np.stack([_rank_vector(r, index) for r in rankings])  # [m, n]: rank of candidate c
    m, n = ranks.shape
    if n == 0:
        raise ValueError("rankings are empty")
    i, j = np.triu_indices(m, 1)
    if n < 2:  # no pair of candidates: tau and rho are 0/0
        tau = rho = np.full(len(i), np.nan)
    else:  # no ties, so tau-b = (concordant - discordant) / (n choose 2)
        u, v = np.triu_indices(n, 1)
        # Exact integer concordance counts, without BLAS (its threads spin on a busy
        # machine) and without an integer matrix product (slower still): each ranking's
        # candidate pairs as bits (no ties: a pair is either way round), and per pair of
        # rankings, concordant - discordant = pairs - 2 * (bits that differ).
        bits = np.packbits(ranks[:, u] < ranks[:, v], axis=1)  # [m, pairs / 8]
        ones = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1)
        step = max(1, _PAIR_CHUNK_ELEMENTS // bits.shape[1])  # bounded memory, as below
        differ = np.concatenate(
            [
                ones[bits[i[s : s + step]] ^ bits[j[s : s + step]]].sum(axis=1, dtype=np.int64)
                for s in range(0, len(i), step)
            ]
        )
        tau = (len(u) - 2 * differ) / len(u)
        # no ties, so Spearman's rho = 1 - 6 sum d^2 / (n (n^2 - 1)); chunked like RBO below
        rho = np.concatenate(
            [
                1
                - 6
                * ((ranks[i[s : s + 4096]] - ranks[j[s : s + 4096]]) ** 2).sum(1)
                / (n * (n * n - 1))
                for s in range(0, len(i), 4096)
            ]
        )
    kk = min(k, n)
    # Pairs are processed in chunks so that thousands of orders (a sweep over 100 candidates
    # has ~2,000, i.e. ~2M pairs) need bounded memory: [chunk, n, kk] booleans at a time.
    chunk = max(1, _PAIR_CHUNK_ELEMENTS // (n * kk))
    rbo_parts, jaccard_parts, same_parts = [], [], []
    for start in range(0, len(i), chunk):
        a, b = i[start : start + chunk], j[start : start + chunk]
        # X_d = number of candidates in the top d of both = those whose worse rank is < d:
        # per pair, a count of each worse rank below kk, summed up to d.
        worse = np.maximum(ranks[a], ranks[b])  # [pairs, n]
        pair, candidate = np.nonzero(worse < kk)
        counts = np.bincount(pair * kk + worse[pair, candidate], minlength=len(a) * kk)
        overlap = counts.reshape(len(a), kk).cumsum(axis=1)  # [pairs, kk]
        rbo_parts.append(_rbo_ext(overlap, p))
        x_k = overlap[:, -1]
        jaccard_parts.append(x_k / (2 * kk - x_k))
        same_parts.append(x_k == kk)
    top = ranks.argmin(1)
    values = (
        tau, np.concatenate(rbo_parts), top[i] == top[j], np.concatenate(jaccard_parts), rho,
        np.concatenate(same_parts),
    )  # fmt: skip
    result = {key: float(np.mean(val)) for key, val in zip(keys, values, strict=True)}
    if n <= k:
        result[f"top{k}_jaccard"] = result[f"top{k}_set_agreement"] = float("nan")
    return result


def spearman_rho(a: Sequence[str], b: Sequence[str]) -> float:
    """Spearman's rho between two full rankings of the same ids; NaN when n < 2."""
    index = {doc: i for i, doc in enumerate(a)}
    if len(index) != len(a):
        raise ValueError("rankings must be permutations of the same set of distinct ids")
    rb = _rank_vector(b, index)
    n = len(a)
    if n < 2:
        return float("nan")
    d = rb - np.arange(n)
    return float(1 - 6 * (d * d).sum() / (n * (n * n - 1)))


def top_k_set_agreement(a: Sequence[str], b: Sequence[str], k: int = 10) -> float:
    """1.0 when both rankings hold exactly the same set of ids in their top k, else 0.0."""
    return float(set(a[:k]) == set(b[:k]))


def best_relevant_ranks(rankings: Sequence[Sequence[str]], relevant: set[str]) -> np.ndarray:
    """1-based rank of the best-placed relevant id in each ranking; NaN where none is relevant."""
    ranks = []
    for ranking in rankings:
        hits = [r for r, doc in enumerate(ranking, start=1) if doc in relevant]
        ranks.append(float(hits[0]) if hits else float("nan"))
    return np.array(ranks, dtype=np.float64)


def tie_rate(scores: Sequence[float]) -> float:
    """Share of adjacent ranks (by score, best first) whose scores are exactly equal.

    Those pairs are ordered by tie-breaking, not by the reranker: where tie-breaking uses the
    input position, ties leak the order in. NaN with fewer than two scores.
    """
    values = np.sort(np.asarray(scores, dtype=np.float64))
    if values.size < 2:
        return float("nan")
    return float(np.mean(values[1:] == values[:-1]))


def nan_stat(stat, values: np.ndarray) -> float:
    """``stat`` (e.g. ``np.mean``) of the non-NaN values; NaN when there are none."""
    values = values[~np.isnan(values)]
    return float(stat(values)) if values.size else float("nan")
