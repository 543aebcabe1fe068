"""Cross-run comparisons for reports: paired tests per metric, win/tie/loss, unstable queries.

Runs are compared only when they saw the same data the same way (dataset fingerprint, depth,
query set and permutation strategy); then every query is a matched pair and a paired test
applies. p-values are two-sided sign-flip permutation tests (seeded), Holm-adjusted across
every row of the comparison table; intervals are paired bootstrap intervals of the mean
difference.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from harness.metrics import registry
from harness.metrics.paired import holm, paired_difference_ci, sign_flip_pvalue, win_tie_loss
from harness.metrics.registry import KENDALL_TAU, NDCG, NDCG_RANGE, NDCG_REFERENCE, RBO
from harness.report.load import RunData

TIE_TOLERANCE = 1e-9
ALL_PAIRS_UP_TO = 3  # beyond this many runs, compare each run with the first one only


@dataclass(frozen=True)
class PairedResult:
    """Run ``b`` against run ``a`` on one metric; wins are queries where ``b`` is better."""

    metric: str
    a: str
    b: str
    n: int
    mean_a: float
    mean_b: float
    diff: float  # mean of b - a
    ci95: tuple[float, float]
    p_value: float
    p_holm: float
    wins: int
    ties: int
    losses: int
    label: str = ""  # the metric as tables show it (``mrr@10 (rel ≥ 2)``)


@dataclass(frozen=True)
class MovedQuery:
    """A query whose output depended most on the shown order."""

    query_id: str
    text: str
    kendall_tau: float
    rbo: float
    ndcg_range: float
    ndcg_mean: float
    ndcg_reference: float


@dataclass(frozen=True)
class Comparability:
    """Which runs can be paired query by query: groups of runs that saw the same data the
    same way (largest first, each of two or more runs), and why each other run is left out."""

    groups: tuple[tuple[str, ...], ...]
    left_out: tuple[tuple[str, str], ...] = ()  # (label, why)

    @property
    def compared(self) -> bool:
        return bool(self.groups)

    def note(self) -> str | None:
        """A sentence naming what is compared and what is not (None when every run is)."""
        if not self.left_out:
            return None
        why = "; ".join(f"{label}: {reason}" for label, reason in self.left_out)
        if not self.groups:
            return f"Runs are not compared query by query: {why}."
        named = " and ".join("{" + ", ".join(group) + "}" for group in self.groups)
        return (
            f"Compared within {'each of ' if len(self.groups) > 1 else ''}{named}, the largest "
            f"group{'s' if len(self.groups) > 1 else ''} of runs on the same data, depth, "
            f"query set and permutation strategy. Left out: {why}."
        )


def comparability(runs: Sequence[RunData]) -> Comparability:
    """The largest groups of runs that can be paired query by query (same dataset fingerprint,
    depth, query set and permutation strategy), so one different run never hides the
    comparison of the others; each run outside every group says how it differs from the
    largest group."""
    if len(runs) < 2:
        return Comparability((), tuple((r.label, "only one run") for r in runs))
    keyed: dict[tuple, list[RunData]] = {}
    for run in runs:
        keyed.setdefault(_key(run), []).append(run)
    ordered = sorted(keyed.values(), key=lambda g: -len(g))  # stable: input order on ties
    groups = tuple(tuple(r.label for r in g) for g in ordered if len(g) > 1)
    reference = ordered[0][0]
    left_out = tuple(
        (g[0].label, _difference(reference, g[0]) or "no other run like it")
        for g in ordered
        if len(g) == 1
    )
    return Comparability(groups, left_out)


def groups_of(runs: Sequence[RunData], found: Comparability) -> list[list[RunData]]:
    by_label = {r.label: r for r in runs}
    return [[by_label[label] for label in group] for group in found.groups]


def incomparable_reason(runs: Sequence[RunData]) -> str | None:
    """Why not every one of these runs can be paired query by query, or None when they can."""
    if len(runs) < 2:
        return "only one run"
    first = runs[0]
    for run in runs[1:]:
        reason = _difference(first, run)
        if reason is not None:
            return reason
    return None


def _key(run: RunData) -> tuple:
    return (_fingerprint(run), repr(_depth(run)), run.strategy, frozenset(run.query_ids))


def _difference(first: RunData, run: RunData) -> str | None:
    for what, key in (
        ("dataset fingerprint", _fingerprint),
        ("depth", _depth),
        ("permutation strategy", lambda r: r.strategy),
    ):
        if key(run) != key(first):
            return f"{what} differs ({first.label}: {key(first)}, {run.label}: {key(run)})"
    if set(run.query_ids) != set(first.query_ids):
        shared = len(set(run.query_ids) & set(first.query_ids))
        return (
            f"query sets differ ({first.label}: {len(set(first.query_ids))}, {run.label}: "
            f"{len(set(run.query_ids))} queries, {shared} shared)"
        )
    return None


def _fingerprint(run: RunData) -> str:
    return run.results.dataset.fingerprint


def _depth(run: RunData) -> object:
    return run.results.header.depth


def run_metrics(runs: Sequence[RunData]) -> registry.MetricRegistry:
    """The built-in metrics and every metric the runs added (as their results record them)."""
    return registry.BUILTIN.merged(*(r.results.metrics for r in runs))


def compare_runs(
    runs: Sequence[RunData],
    metrics: Sequence[str] | None = None,
    *,
    seed: int = 0,
    groups: Sequence[Sequence[RunData]] | None = None,
) -> list[PairedResult]:
    """Run pairs on every metric (default: the registry's compared ones) both have per query,
    within each of ``groups`` (default: all runs as one group): all pairs (earlier run as
    ``a``) for up to three runs, else each run against the group's first, so the table and the
    Holm family (every row of every group) stay small enough to read and to reach
    significance."""
    known = run_metrics(runs)
    names = [s.name for s in known.compared()] if metrics is None else list(metrics)
    specs = [known.get(name) for name in names]
    pairs = []
    for group in [runs] if groups is None else groups:
        if len(group) <= ALL_PAIRS_UP_TO:
            pairs += list(itertools.combinations(group, 2))
        else:
            pairs += [(group[0], b) for b in group[1:]]
    rows = []
    for a, b in pairs:
        level = a.results.relevance_level
        for spec in specs:
            if spec.binary and b.results.relevance_level != level:
                continue  # relevant from another grade: not the same quantity (see levels_note)
            va, vb = a.per_query(spec.name), b.per_query(spec.name)
            queries = [q for q in a.query_ids if not (math.isnan(va[q]) or math.isnan(vb[q]))]
            if not queries:
                continue
            xa = np.array([va[q] for q in queries])
            xb = np.array([vb[q] for q in queries])
            diff = xb - xa
            oriented = -diff if spec.lower_is_better else diff
            mean, low, high = paired_difference_ci(diff, seed=seed)
            p = sign_flip_pvalue(diff, alternative="two-sided", seed=seed)
            wins, ties, losses = win_tie_loss(oriented, tolerance=TIE_TOLERANCE)
            rows.append(
                PairedResult(
                    spec.name,
                    a.label,
                    b.label,
                    len(queries),
                    float(xa.mean()),
                    float(xb.mean()),
                    mean,
                    (low, high),
                    p,
                    math.nan,
                    wins,
                    ties,
                    losses,
                    known.label(spec.name, level),
                )
            )
    adjusted = holm([r.p_value for r in rows])
    return [
        PairedResult(**{**r.__dict__, "p_holm": float(p)})
        for r, p in zip(rows, adjusted, strict=True)
    ]


def levels_note(runs: Sequence[RunData]) -> str | None:
    """Why binary metrics are missing from the comparison: the runs count a candidate as
    relevant from different grades (``--relevance-level`` or the dataset cards)."""
    levels = {r.label: r.results.relevance_level for r in runs}
    if len(set(levels.values())) < 2:
        return None
    named = ", ".join(f"{label}: grade ≥ {level}" for label, level in levels.items())
    metrics = ", ".join(spec.name for spec in run_metrics(runs).compared() if spec.binary)
    return (
        f"{metrics} compared only between runs at the same relevance level ({named}); "
        "rerun with the same --relevance-level to compare them."
    )


def moved_most(run: RunData, k: int = 5) -> list[MovedQuery]:
    """The ``k`` queries with the lowest mean Kendall tau (ties: largest NDCG range)."""
    per_query = run.results.per_query
    texts = {q: record.text for q, record in run.queries.items()}

    def get(values: Mapping[str, float], key: str) -> float:
        return float(values.get(key, math.nan))

    def order(item: tuple[str, Mapping[str, float]]) -> tuple[float, float]:
        tau = get(item[1], KENDALL_TAU)
        return (math.inf if math.isnan(tau) else tau, -get(item[1], NDCG_RANGE))

    ranked = sorted(per_query.items(), key=order)[:k]
    return [
        MovedQuery(
            query_id=qid,
            text=texts.get(qid, ""),
            kendall_tau=get(values, KENDALL_TAU),
            rbo=get(values, RBO),
            ndcg_range=get(values, NDCG_RANGE),
            ndcg_mean=get(values, NDCG),
            ndcg_reference=get(values, NDCG_REFERENCE),
        )
        for qid, values in ranked
    ]
