"""Adaptive (sequential) order sampling: show each query as many random orders as the run's
target needs, between ``--min-perms`` and ``--perms``.

The orders are the ``random`` strategy's own stream (``harness.permutations``): query q's k-th
order is the same whatever the target, so an adaptive run shows a prefix of what ``--perms``
would show. The rule is pre-registered and decided in *rounds*, each from the samples already
on disk only, so a resumed run replays the same rounds and continues where it stopped:

1. round 0: every query gets ``min_perms`` design orders;
2. after a round, each query's per-query metric (the summary's definition: the mean over
   pairs of its outputs, or over its outputs for ``copy_tau``) gets a jackknife variance
   ``V_q``; the run-level estimate is the mean over queries (the summary's value) and its
   half-width for the order sampling (queries fixed) is ``z * sqrt(sum_q V_q) / Q``; after a
   round of two orders (one pair per query, no ``V_q``) it is the Student-t interval of the
   mean of the queries' values, whose spread between queries is conservative;
3. the run stops when that is at most the target, or the queries are at ``--perms``;
   otherwise *every* query gets the same next count: the ``n (h / target)^2`` the current
   half-width ``h`` says is needed, at most doubled, at most ``--perms``.

Every query gets the same number of orders. Giving each query its own share (Neyman
allocation, ``n_q ∝ s_q``) was measured and rejected: a query whose first few outputs happen
to agree looks settled and stops at an estimate that is too high, and on a reranker that
flips its top two for one order in n, the 95% intervals covered the truth in only 8-55% of
200 seeds; a two-stage design that keeps its pilot out of the estimate is valid but saves
nothing within ``--perms 20`` (docs/adaptive.md). With the same count everywhere the decision
depends only on the run-level interval, and the measured coverage stays at or above 93%.

This is a pre-registered stopping rule, not a confidence sequence: its interval is a normal
one whose coverage under this optional stopping is *measured* (``benchmarks/bench_adaptive.py``),
not proven. A distribution-free confidence sequence (Hoeffding or empirical Bernstein for values
in [-1, 1]) is valid at any stopping time but cannot reach a useful width with at most 20
orders (about ±0.7 for Kendall tau at 20 orders of a perfectly stable query), so it would never
stop early.

Which metrics can steer: the per-query means of bounded per-pair or per-order values, whose
run-level mean the summary reports: :data:`PAIRWISE` (U-statistics over pairs of outputs) and
``copy_tau``. Pooled or non-mean metrics (``position_bias_mad``, ``ppi``/``gpi``, latency,
the spreads) are not targets: they are computed as usual on whatever orders were shown.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.metrics import stability
from harness.metrics.registry import (
    COPY_TAU,
    KENDALL_TAU,
    RBO,
    SPEARMAN,
    TOP1_AGREEMENT,
    TOP_K,
    TOPK_JACCARD,
    TOPK_SET_AGREEMENT,
)

MAX_GROWTH = 2
"""A query's orders at most double from one round to the next (estimates from few orders are
noisy: a bounded step keeps one bad estimate from spending the whole budget)."""

PairFn = Callable[[Sequence[str], Sequence[str]], float]
PAIRWISE: dict[str, PairFn] = {
    KENDALL_TAU: stability.kendall_tau,
    RBO: lambda a, b: stability.rbo(a, b, depth=TOP_K),
    TOP1_AGREEMENT: stability.top1_agreement,
    TOPK_JACCARD: lambda a, b: stability.top_k_jaccard(a, b, TOP_K),
    SPEARMAN: stability.spearman_rho,
    TOPK_SET_AGREEMENT: lambda a, b: float(stability.top_k_set_agreement(a, b, TOP_K)),
}
"""Per-pair metrics whose per-query value is the mean over pairs of outputs."""
PER_ORDER = (COPY_TAU,)
"""Per-order metrics whose per-query value is the mean over outputs."""
TARGETS = (*PAIRWISE, *PER_ORDER)


@dataclass(frozen=True)
class Target:
    """What an adaptive run aims for: the run-level ``metric``'s interval half-width
    ``half_width`` at ``confidence``, with ``min_perms`` .. ``max_perms`` orders per query."""

    metric: str
    half_width: float
    min_perms: int
    max_perms: int
    confidence: float = 0.95

    @classmethod
    def parse(cls, text: str, *, min_perms: int, max_perms: int) -> Target:
        """``METRIC=HALF_WIDTH`` (``kendall_tau=0.02``; ``±`` allowed); one-line errors."""
        metric, eq, width = str(text).partition("=")
        metric = metric.strip()
        try:
            if not eq:
                raise ValueError
            half_width = float(width.strip().lstrip("±+"))
        except ValueError:
            raise HarnessError(
                f"--target must be METRIC=HALF_WIDTH (e.g. kendall_tau=0.02), got {text!r}"
            ) from None
        if metric not in TARGETS:
            raise HarnessError(
                f"--target: metric {metric!r} cannot steer adaptive sampling; choose from "
                f"{', '.join(TARGETS)} (bounded per-query means, see docs/adaptive.md)"
            )
        if not 0 < half_width < 2:
            raise HarnessError(f"--target half-width must be in (0, 2), got {half_width:g}")
        if min_perms < 2:  # a pair per query (pairwise) or two outputs give a variance
            raise HarnessError(
                f"--min-perms must be at least 2 for a {metric} target (its variance needs 2 "
                f"orders), got {min_perms}"
            )
        if max_perms < min_perms:
            raise HarnessError(f"--perms ({max_perms}) must be at least --min-perms ({min_perms})")
        return cls(metric, half_width, min_perms, max_perms)

    @property
    def z(self) -> float:
        return NormalDist().inv_cdf(0.5 + self.confidence / 2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "half_width": self.half_width,
            "confidence": self.confidence,
            "min_perms": self.min_perms,
            "max_perms": self.max_perms,
            "rule": "rounds; jackknife per-query variances; normal run-level interval "
            "(Student-t between queries after a round of 2 orders); "
            f"the same count for every query, at most x{MAX_GROWTH} per round",
        }


def query_values(metric: str, rankings: Sequence[Sequence[str]], shown=None) -> np.ndarray:
    """The values one query's metric averages: the [n, n] matrix of per-pair values (pairwise
    metrics; diagonal NaN) or the n per-order values (``copy_tau``; needs ``shown``, the
    shown orders as candidate ids)."""
    if metric == KENDALL_TAU and len(rankings) >= 2 and len(rankings[0]) >= 2:
        return _tau_matrix(rankings)
    if metric in PAIRWISE:
        fn = PAIRWISE[metric]
        n = len(rankings)
        matrix = np.full((n, n), np.nan)
        if metric in (TOPK_JACCARD, TOPK_SET_AGREEMENT) and rankings and len(rankings[0]) <= TOP_K:
            return matrix  # every top k is the whole set: undefined, as the summary says
        for i in range(n):
            for j in range(i + 1, n):
                matrix[i, j] = matrix[j, i] = fn(rankings[i], rankings[j])
        return matrix
    if shown is None:
        raise ValueError(f"{metric} needs the shown orders")
    return np.array([stability.kendall_tau(s, r) for s, r in zip(shown, rankings, strict=True)])


def _tau_matrix(rankings: Sequence[Sequence[str]]) -> np.ndarray:
    """Kendall tau of every pair of full rankings (no ties: (C - D) / (n choose 2)), as
    :func:`harness.metrics.stability.kendall_tau` gives pair by pair, vectorised."""
    index = {doc: i for i, doc in enumerate(rankings[0])}
    ranks = np.empty((len(rankings), len(index)), dtype=np.int64)
    for row, ranking in enumerate(rankings):
        ranks[row, [index[doc] for doc in ranking]] = np.arange(len(ranking))
    u, v = np.triu_indices(len(index), 1)
    signs = np.sign(ranks[:, u] - ranks[:, v]).astype(np.float64)
    matrix = signs @ signs.T / len(u)
    np.fill_diagonal(matrix, np.nan)
    return matrix


@dataclass(frozen=True)
class QueryEstimate:
    """One query's estimate from its first ``n`` orders and the jackknife variance of it."""

    n: int
    mean: float
    variance: float  # of the mean (jackknife); NaN when undefined

    @property
    def per_order_variance(self) -> float:
        return self.n * self.variance


def estimate(values: np.ndarray) -> QueryEstimate:
    """Mean and jackknife variance of a per-order vector or a per-pair matrix's pair mean."""
    if values.ndim == 1:
        n = len(values)
        mean = float(np.mean(values)) if n else math.nan
        var = float(np.var(values, ddof=1)) / n if n >= 2 else math.nan
        return QueryEstimate(n, mean, var)
    n = values.shape[0]
    if n < 2:
        return QueryEstimate(n, math.nan, math.nan)
    upper = values[np.triu_indices(n, 1)]
    mean = float(np.mean(upper))
    if n < 3 or np.isnan(mean):
        return QueryEstimate(n, mean, math.nan)
    total = float(upper.sum())
    rows = np.nansum(values, axis=1)
    leave_out = (total - rows) / ((n - 1) * (n - 2) / 2)
    var = (n - 1) / n * float(np.sum((leave_out - leave_out.mean()) ** 2))
    return QueryEstimate(n, mean, var)


@dataclass(frozen=True)
class Round:
    """What the rule says after a round: the run-level estimate and half-width, and the
    design orders each query gets next (unchanged for all: the run stops)."""

    estimate: float
    half_width: float
    shown: int  # design orders the round's estimate is made on
    counts: dict[str, int]
    stop: bool
    reason: str  # "target" | "max" | "undefined" | "" (continues)
    undefined: frozenset[str] = frozenset()  # queries whose metric has no variance


def decide(estimates: Mapping[str, QueryEstimate], target: Target) -> Round:
    """The rule for one round, from each query's estimate on the orders shown so far."""
    counts = {q: e.n for q, e in estimates.items()}
    shown = sum(counts.values())
    usable = {q: e for q, e in estimates.items() if not math.isnan(e.variance)}
    paired = {q: e for q, e in estimates.items() if e.n == 2 and not math.isnan(e.mean)}
    if not usable and len(paired) >= 2:  # one pair per query: the spread between queries
        return _between_queries(estimates, paired, target)
    undefined = frozenset(estimates) - frozenset(usable)
    if not usable and paired:  # a single query with one pair: a third order gives a variance
        if target.max_perms < 3:
            return Round(math.nan, math.nan, shown, counts, True, "max", undefined)
        return Round(math.nan, math.nan, shown, dict.fromkeys(counts, 3), False, "", undefined)
    if not usable:  # nothing measurable (one-candidate queries): the minimum is all there is
        return Round(math.nan, math.nan, shown, counts, True, "undefined", undefined)
    size = len(usable)
    mean = float(np.mean([e.mean for e in usable.values()]))
    half = target.z * math.sqrt(sum(e.variance for e in usable.values())) / size
    current = max(e.n for e in usable.values())
    return _step(mean, half, shown, counts, current, undefined, target)


def _between_queries(
    estimates: Mapping[str, QueryEstimate], paired: Mapping[str, QueryEstimate], target: Target
) -> Round:
    """The round after two orders per query, where a pair mean has no variance of its own:
    the Student-t interval of the mean of the queries' values, whose variance (the spread
    between queries) also holds how much the queries' true values differ, so it is never
    smaller in expectation than the order-sampling variance it stands for (conservative)."""
    from scipy.stats import t as student_t

    counts = {q: e.n for q, e in estimates.items()}
    values = np.array([e.mean for e in paired.values()])
    size = len(values)
    spread = float(np.var(values, ddof=1)) / size
    quantile = float(student_t.ppf(0.5 + target.confidence / 2, size - 1))
    half = quantile * math.sqrt(spread)
    undefined = frozenset(estimates) - frozenset(paired)
    shown = sum(counts.values())
    return _step(float(values.mean()), half, shown, counts, 2, undefined, target, lowest=3)


def _step(
    mean: float,
    half: float,
    shown: int,
    counts: dict[str, int],
    current: int,
    undefined: frozenset[str],
    target: Target,
    lowest: int = 0,
) -> Round:
    """Stop at the target or at ``--perms``; else the next count, the same for every query
    (at least ``lowest``: 3 after a round of pairs, where each query's own variance starts)."""
    if half <= target.half_width:
        return Round(mean, half, shown, counts, True, "target", undefined)
    if current >= target.max_perms:
        return Round(mean, half, shown, counts, True, "max", undefined)
    # the variance of the mean falls as 1/n: n (h / target)^2 orders reach the target
    needed = math.ceil(current * (half / target.half_width) ** 2 - 1e-9)
    following = max(current + 1, lowest, min(target.max_perms, MAX_GROWTH * current, needed))
    grown = {q: max(n, following) for q, n in counts.items()}
    return Round(mean, half, shown, grown, False, "", undefined)


@dataclass
class Progress:
    """Where a replay of the rule stands: the counts each query should have now, the rounds
    decided so far, and, once it stopped, the final round."""

    counts: dict[str, int]
    rounds: list[Round] = field(default_factory=list)
    final: Round | None = None


EstimateFn = Callable[[str, int], QueryEstimate | None]
"""(query id, n) -> the query's estimate on its first n design orders, or None while some of
them have no sample yet."""


def replay(query_ids: Sequence[str], target: Target, estimate_of: EstimateFn) -> Progress:
    """Replay the rule from round 0 on the samples there are: stops at the first round whose
    orders are not all sampled (the caller reranks ``counts``) or at the rule's end."""
    progress = Progress(dict.fromkeys(query_ids, target.min_perms))
    while True:
        estimates = {}
        for q, n in progress.counts.items():
            found = estimate_of(q, n)
            if found is None:
                return progress
            estimates[q] = found
        step = decide(estimates, target)
        progress.rounds.append(step)
        if step.stop:
            progress.final = step
            return progress
        progress.counts = step.counts


def stop_reasons(progress: Progress) -> dict[str, str]:
    """Why each query stopped where it did: ``undefined`` (its metric has no variance: one
    candidate), ``target`` (the run's interval reached the target, at whatever count), else
    ``max`` (at ``--perms`` without reaching it)."""
    assert progress.final is not None
    last = progress.final
    return {
        q: "undefined" if q in last.undefined else ("target" if last.reason == "target" else "max")
        for q in progress.counts
    }
