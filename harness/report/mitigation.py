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

from harness.errors import HarnessError
from harness.metrics.registry import (
    FORWARD_PASSES,
    KENDALL_TAU,
    NDCG,
    RBO,
    TOP_K,
    latency_percentile,
)
from harness.report.compare import PairedResult, compare_runs
from harness.report.document import Section, Table, fmt, fmt_p, fmt_signed, with_interval
from harness.report.load import RunData
from harness.report.reading import smallest_sign_flip_p

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
        key="mitigation",
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


OBJECTIVES = ("effectiveness", "stability", "both")


@dataclass(frozen=True)
class Recommendation:
    """What to use for a budget and objective, with the paired evidence behind it."""

    objective: str
    budget: float | None  # forward passes per order, None for no limit
    choice: str  # a run label, "" when no run fits the budget
    runner_up: str  # the best other run on the objective ("" when there is none)
    queries: int
    decided: bool  # False: too few queries, or the choice is not significantly better
    evidence: tuple[PairedResult, ...]  # choice (b) against the runner-up (a)
    paragraphs: tuple[str, ...]


def recommend(
    runs: Sequence[RunData],
    rows: Sequence[MitigationRow],
    *,
    budget: float | None = None,
    objective: str = "both",
    alpha: float = 0.05,
    seed: int = 0,
) -> Recommendation:
    """The run to use within ``budget`` (mean forward passes per order) for ``objective``:
    effectiveness (highest NDCG@10), stability (highest Kendall tau) or both (the most stable
    run whose NDCG@10 is not significantly below the most effective one's, paired test); the
    evidence is the paired comparison with the best other run on the same objective."""
    if objective not in OBJECTIVES:
        raise HarnessError(f"--objective {objective!r}: expected one of {', '.join(OBJECTIVES)}")
    by_label = {r.label: r for r in runs}
    usable = [r for r in rows if all(math.isfinite(v) for v in (r.ndcg, r.tau, r.forward_passes))]
    within = [r for r in usable if budget is None or r.forward_passes <= budget + 1e-9]
    queries = min((len(by_label[r.label].query_ids) for r in usable), default=0)
    limit = "at any cost" if budget is None else f"within {budget:g} forward passes per order"
    if not within:
        cheapest = min(usable, key=lambda r: r.forward_passes, default=None)
        text = f"No run costs at most {budget:g} forward passes per order" + (
            f"; the cheapest is {cheapest.label} at {cheapest.forward_passes:g}."
            if cheapest
            else "."
        )
        return Recommendation(objective, budget, "", "", queries, False, (), (text,))

    def key(metric: str):
        return lambda r: (getattr(r, metric), -r.forward_passes)

    effective = max(within, key=key("ndcg"))
    trade = False  # "both": the choice is compared with a more stable but less effective run
    if objective == "effectiveness":
        choice, metric = effective, NDCG
        runner = max((r for r in within if r is not choice), key=key("ndcg"), default=None)
    elif objective == "stability":
        choice, metric = max(within, key=key("tau")), KENDALL_TAU
        runner = max((r for r in within if r is not choice), key=key("tau"), default=None)
    else:
        enough = [effective] + [
            r
            for r in within
            if r is not effective and not _worse(by_label, effective, r, alpha, seed)
        ]
        choice, metric = max(enough, key=lambda r: (r.tau, r.ndcg, -r.forward_passes)), KENDALL_TAU
        runner = max((r for r in enough if r is not choice), key=key("tau"), default=None)
        if runner is None:
            trade = True
            runner = max((r for r in within if r is not choice), key=key("tau"), default=None)
    if runner is None:
        text = f"Only {choice.label} fits {limit}: nothing to choose between."
        return Recommendation(objective, budget, choice.label, "", queries, False, (), (text,))
    pair = [by_label[runner.label], by_label[choice.label]]
    evidence = tuple(compare_runs(pair, [NDCG, KENDALL_TAU], seed=seed))
    found = {e.metric: e for e in evidence}
    main = found.get(metric)
    goal = {
        "effectiveness": f"effectiveness (NDCG@{TOP_K})",
        "stability": "stability (Kendall tau across orders)",
        "both": f"stability without a significant loss of NDCG@{TOP_K}",
    }[objective]
    lead = f"For {goal}, {limit}"
    cost = f"{choice.forward_passes:g} forward passes per order against {runner.forward_passes:g}"
    smallest = smallest_sign_flip_p(queries)
    decided = False
    if smallest >= alpha:
        estimates = "; ".join(f"{e.label} {e.diff:+.4f}" for e in evidence)
        text = (
            f"{lead}: not enough queries to choose. With {queries} "
            f"quer{'y' if queries == 1 else 'ies'} no paired difference can be significant "
            f"(the smallest two-sided sign-flip p is 2/2^{queries} = {smallest:.3g}). Point "
            f"estimates only, {choice.label} minus {runner.label}: {estimates} ({cost}); "
            "rerun both on more queries (--queries) before choosing."
        )
    elif trade and NDCG in found:
        loss = found[NDCG]
        text = (
            f"{lead}: use {choice.label}, the most effective run; every more stable run loses "
            f"NDCG@{TOP_K} significantly. The most stable, {runner.label} (Kendall tau "
            f"{runner.tau:.4f} against {choice.tau:.4f}), is {loss.diff:.4f} lower on "
            f"NDCG@{TOP_K} ({_evidence(loss, choice.label)}; {cost}). If order stability matters "
            "more than that loss, use --objective stability."
        )
        decided = True
    elif main is None or main.p_value >= alpha:
        p = "n/a" if main is None else f"{main.p_value:.3g}"
        diff = math.nan if main is None else main.diff
        text = (
            f"{lead}: {choice.label} and {runner.label} cannot be told apart on {metric} "
            f"(difference {diff:+.4f}, paired sign-flip p = {p} over {queries} queries). "
            f"Either will do; {_cheaper(choice, runner)} is cheaper ({cost})."
        )
    else:
        text = (
            f"{lead}: use {choice.label}. It beats {runner.label} on {metric} by "
            f"{main.diff:+.4f} ({_evidence(main, choice.label)}), at {cost}."
        )
        decided = True
        if objective == "both" and NDCG in found:
            ndcg = found[NDCG]
            text += (
                f" Its NDCG@{TOP_K} differs from {runner.label}'s by {ndcg.diff:+.4f} "
                f"(p = {ndcg.p_value:.3g}) and is not significantly below the most effective "
                f"run's ({effective.label})."
            )
    return Recommendation(
        objective, budget, choice.label, runner.label, queries, decided, evidence, (text,)
    )


def _evidence(e: PairedResult, better: str) -> str:
    low, high = e.ci95
    return (
        f"95% CI [{low:+.4f}, {high:+.4f}], paired sign-flip p = {e.p_value:.3g}; {better} "
        f"better on {e.wins} of {e.n} queries, worse on {e.losses}"
    )


def _worse(
    by_label: Mapping[str, RunData],
    best: MitigationRow,
    other: MitigationRow,
    alpha: float,
    seed: int,
) -> bool:
    """Whether ``other``'s NDCG@10 is significantly below ``best``'s (paired sign-flip test,
    one-sided in effect: the point estimate must favour ``best`` as well)."""
    found = compare_runs([by_label[best.label], by_label[other.label]], [NDCG], seed=seed)
    return bool(found) and found[0].diff < 0 and found[0].p_value < alpha


def _cheaper(a: MitigationRow, b: MitigationRow) -> str:
    if a.forward_passes == b.forward_passes:
        return "neither"
    return a.label if a.forward_passes < b.forward_passes else b.label


def front_by_stability_measure(rows: Sequence[MitigationRow]) -> str | None:
    """A sentence naming the runs whose place on the Pareto front depends on measuring
    stability by Kendall tau or by RBO@10 (None when both fronts agree)."""
    tau = pareto_front([(r.ndcg, r.tau, r.forward_passes) for r in rows])
    rbo = pareto_front([(r.ndcg, r.rbo, r.forward_passes) for r in rows])
    if tau == rbo:
        return None
    parts = [
        f"{rows[i].label} is on the front by RBO@{TOP_K} but dominated by Kendall tau"
        for i in sorted(rbo - tau)
    ] + [
        f"{rows[i].label} is on the front by Kendall tau but dominated by RBO@{TOP_K}"
        for i in sorted(tau - rbo)
    ]
    return (
        "The Pareto front depends on the stability measure: "
        + "; ".join(parts)
        + f". Kendall tau weighs every rank alike, RBO@{TOP_K} the top ranks most: pick the "
        "one that matches how the ranking is used."
    )


def recommendation_section(found: Recommendation, rows: Sequence[MitigationRow]) -> Section:
    paragraphs = list(found.paragraphs)
    depends = front_by_stability_measure(rows)
    if depends is not None:
        paragraphs.append(depends)
    paragraphs.append(
        "Set the budget and the objective with harness report --budget FORWARD_PASSES "
        "--objective effectiveness|stability|both (default: no budget, both)."
    )
    tables: tuple[Table, ...] = ()
    if found.evidence:
        tables = (
            Table(
                header=(
                    "metric",
                    "pair (B - A)",
                    "mean A",
                    "mean B",
                    "difference [95% CI]",
                    "p",
                    "B wins/ties/losses",
                ),
                rows=tuple(
                    (
                        e.label,
                        f"{e.b} - {e.a}",
                        fmt(e.mean_a),
                        fmt(e.mean_b),
                        f"{fmt_signed(e.diff)} [{fmt_signed(e.ci95[0])}, {fmt_signed(e.ci95[1])}]"
                        + (" *" if e.p_value < 0.05 else ""),
                        fmt_p(e.p_value),
                        f"{e.wins}/{e.ties}/{e.losses}",
                    )
                    for e in found.evidence
                ),
                numeric=(False, False, True, True, True, True, True),
                caption="Paired evidence: the choice (B) against the best other run (A). "
                "*: sign-flip p < 0.05.",
                key="what-to-use",
            ),
        )
    return Section("What to use", paragraphs=tuple(paragraphs), tables=tables)
