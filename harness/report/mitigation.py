"""The mitigation comparison: effectiveness vs stability vs cost of several runs on the same
candidate sets, with the Pareto front marked and each meta-reranker beside the reranker it
wraps.

Every number comes from the runs' ``results.json`` summaries: ``ndcg@10``, ``kendall_tau``
and ``rbo@10`` (means over queries, 95% intervals), ``forward_passes`` (mean per order) and
``latency_ms_p50`` (median per order). A run is on the Pareto front when no other run is at
least as effective, at least as stable (Kendall tau) and at most as costly (forward passes),
and strictly better in one of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.metrics.registry import FORWARD_PASSES, KENDALL_TAU, NDCG, RBO, latency_percentile
from harness.report.document import Section, Table, fmt, with_interval
from harness.report.load import RunData

LATENCY_P50 = latency_percentile(50)
NAN_CI = (math.nan, math.nan)


@dataclass(frozen=True)
class MitigationRow:
    """One run in the comparison."""

    label: str
    reranker: str
    method: str  # the preset's adapter: psc, bootstrap, first, lft, ...
    inner: str  # the preset a meta-reranker wraps ("" for a plain reranker)
    inner_label: str  # that preset's run in this report ("" when it is not in it)
    ndcg: float
    ndcg_ci: tuple[float, float]
    tau: float
    tau_ci: tuple[float, float]
    rbo: float
    rbo_ci: tuple[float, float]
    forward_passes: float
    latency_ms_p50: float
    pareto: bool = False


def _summary(run: RunData, metric: str) -> tuple[float, tuple[float, float]]:
    entry = run.results.summary.get(metric)
    if entry is None:
        return math.nan, NAN_CI
    ci = entry.ci95
    return float(entry.value), (float(ci[0]), float(ci[1])) if ci else NAN_CI


def _inner_name(run: RunData) -> str:
    inner = run.results.reranker.identity.get("inner")
    if isinstance(inner, Mapping):
        preset = inner.get("preset")
        if isinstance(preset, Mapping):
            return str(preset.get("name", ""))
    return ""


def mitigation_rows(runs: Sequence[RunData]) -> list[MitigationRow]:
    """One row per run, each meta-reranker right after the run of its inner reranker when it
    is in the report; ``pareto`` marks the front."""
    by_name = {r.reranker: r.label for r in runs}
    rows = []
    for run in runs:
        ndcg, ndcg_ci = _summary(run, NDCG)
        tau, tau_ci = _summary(run, KENDALL_TAU)
        rbo, rbo_ci = _summary(run, RBO)
        inner = _inner_name(run)
        rows.append(
            MitigationRow(
                label=run.label,
                reranker=run.reranker,
                method=run.results.reranker.adapter,
                inner=inner,
                inner_label=by_name.get(inner, "") if inner else "",
                ndcg=ndcg,
                ndcg_ci=ndcg_ci,
                tau=tau,
                tau_ci=tau_ci,
                rbo=rbo,
                rbo_ci=rbo_ci,
                forward_passes=_summary(run, FORWARD_PASSES)[0],
                latency_ms_p50=_summary(run, LATENCY_P50)[0],
            )
        )
    front = pareto_front([(r.ndcg, r.tau, r.forward_passes) for r in rows])
    rows = [_with_front(r, i in front) for i, r in enumerate(rows)]
    return _grouped(rows)


def _with_front(row: MitigationRow, on_front: bool) -> MitigationRow:
    return MitigationRow(**{**row.__dict__, "pareto": on_front})


def _grouped(rows: list[MitigationRow]) -> list[MitigationRow]:
    """Plain rerankers in input order, each followed by the meta-rerankers that wrap it."""
    placed: set[str] = set()
    out: list[MitigationRow] = []

    def place(row: MitigationRow) -> None:
        if row.label in placed:
            return
        placed.add(row.label)
        out.append(row)
        for other in rows:
            if other.inner_label == row.label:
                place(other)

    for row in rows:
        if not row.inner_label:
            place(row)
    for row in rows:  # meta-rerankers of meta-rerankers in a cycle-free but unplaced chain
        place(row)
    return out


def pareto_front(points: Sequence[tuple[float, float, float]]) -> set[int]:
    """Indices of the points (effectiveness up, stability up, cost down) no other dominates;
    a point with a NaN coordinate is never on the front."""

    def dominates(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
        at_least = a[0] >= b[0] and a[1] >= b[1] and a[2] <= b[2]
        return at_least and (a[0] > b[0] or a[1] > b[1] or a[2] < b[2])

    usable = [i for i, p in enumerate(points) if not any(math.isnan(v) for v in p)]
    return {i for i in usable if not any(dominates(points[j], points[i]) for j in usable if j != i)}


def mitigation_table(rows: Sequence[MitigationRow]) -> Table:
    def wraps(row: MitigationRow) -> str:
        if not row.inner:
            return ""
        return row.inner_label or f"{row.inner} (not in this report)"

    body = tuple(
        (
            row.label,
            row.method,
            wraps(row),
            with_interval(row.ndcg, row.ndcg_ci),
            with_interval(row.tau, row.tau_ci),
            with_interval(row.rbo, row.rbo_ci),
            fmt(row.forward_passes, 2),
            fmt(row.latency_ms_p50, 1),
            "yes" if row.pareto else "",
        )
        for row in rows
    )
    return Table(
        header=(
            "run",
            "method",
            "wraps",
            NDCG,
            KENDALL_TAU,
            RBO,
            "forward passes / order",
            "latency p50 (ms / order)",
            "Pareto front",
        ),
        rows=body,
        numeric=(False, False, False, True, True, True, True, True, False),
    )


def mitigation_section(rows: Sequence[MitigationRow], figures: Sequence[Any]) -> Section:
    note = (
        "Effectiveness, stability and cost of each run on the same candidate sets and orders, "
        "from each run's results.json: means over queries with 95% bootstrap intervals; "
        "forward passes are the mean per reranked order (a meta-reranker's sum its inner "
        "calls), latency the median per order. A meta-reranker follows the run of the "
        "reranker it wraps. Pareto front: no other run is at least as effective (NDCG@10), "
        "at least as stable (Kendall tau) and at most as costly (forward passes), and "
        "better in one."
    )
    return Section(
        "Mitigation: effectiveness vs stability vs cost",
        paragraphs=(note,),
        tables=(mitigation_table(rows),),
        figures=tuple(figures),
    )
