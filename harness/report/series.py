"""Data series behind the report's plots, derived from a run's samples (pure functions).

``results.json`` holds per-query and per-order values and the pooled position-bias arrays;
the rest — latency per order and where a swept item landed — comes from ``samples.jsonl``
and the run's ``queries.jsonl``. Nothing is recomputed from the dataset.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from harness.metrics.registry import KENDALL_TAU, NDCG
from harness.report.load import RunData


@dataclass(frozen=True)
class OrderNdcg:
    """NDCG@10 per shown order index, averaged over the queries that have that order."""

    values: np.ndarray  # [orders], index 0 = the identity (first-stage) order
    reference: float


@dataclass(frozen=True)
class SweepCurve:
    """The lost-in-the-middle curve: a relevant item moved through every input position."""

    positions: np.ndarray  # 1-based input position the moved item was shown at
    mean_rank: np.ndarray  # its mean 1-based output rank there
    mean_ndcg: np.ndarray  # mean NDCG@10 of those outputs
    count: np.ndarray  # (query, item) pairs behind each point


@dataclass(frozen=True)
class RunPoint:
    """One run in the stability-vs-effectiveness plane, with 95% intervals."""

    ndcg: float
    ndcg_ci: tuple[float, float]
    tau: float
    tau_ci: tuple[float, float]


def _order_values(run: RunData, metric: str) -> dict[tuple[str, int], float]:
    """``{(query id, order index): value}`` of a per-order metric, from ``results.json``."""
    return {
        (query_id, index): value
        for query_id, per_order in run.results.per_order.items()
        for index, value in zip(per_order.order_index, per_order.values[metric], strict=True)
    }


def order_ndcg(run: RunData) -> OrderNdcg:
    by_order: dict[int, list[float]] = defaultdict(list)
    for (_, index), value in _order_values(run, NDCG).items():
        by_order[index].append(value)
    values = np.array([np.mean(by_order[i]) for i in sorted(by_order)])
    return OrderNdcg(values=values, reference=float(values[0]) if 0 in by_order else math.nan)


def latencies_ms(run: RunData) -> np.ndarray:
    """Latency per order in ms (a call's wall time divided by the orders it served)."""
    values = [s.facts.get("latency_ms") for s in run.samples]
    return np.array([v for v in values if isinstance(v, int | float)], dtype=float)


def sweep_curve(run: RunData) -> SweepCurve | None:
    """None unless the run used the sweep strategy (and moved at least one item)."""
    if run.strategy != "sweep":
        return None
    ndcg = _order_values(run, NDCG)
    moved: dict[str, set[int]] = defaultdict(set)
    for sample in run.samples:
        if sample.label.family == "sweep" and sample.label.item is not None:
            moved[sample.query_id].add(sample.label.item)
    ranks: dict[int, list[int]] = defaultdict(list)
    scores: dict[int, list[float]] = defaultdict(list)
    for sample in run.samples:
        doc_ids = run.queries[sample.query_id].doc_ids
        label = sample.label
        placements: list[tuple[int, int]]
        if label.family == "sweep" and label.item is not None and label.position is not None:
            placements = [(label.item, label.position)]
        elif sample.order_index == 0:  # the identity order shows every item at its own place
            placements = [(item, item) for item in moved[sample.query_id]]
        else:
            continue
        position = {doc: rank for rank, doc in enumerate(sample.ranking)}
        for item, pos in placements:
            ranks[pos].append(position[doc_ids[item]] + 1)
            scores[pos].append(ndcg[sample.key])
    if not ranks:
        return None
    positions = np.array(sorted(ranks))
    return SweepCurve(
        positions=positions + 1,
        mean_rank=np.array([np.mean(ranks[p]) for p in positions]),
        mean_ndcg=np.array([np.mean(scores[p]) for p in positions]),
        count=np.array([len(ranks[p]) for p in positions]),
    )


def run_point(run: RunData) -> RunPoint:
    def entry(metric: str) -> tuple[float, tuple[float, float]]:
        item = run.results.summary.get(metric)
        if item is None:
            return math.nan, (math.nan, math.nan)
        return item.value, item.ci95 or (math.nan, math.nan)

    ndcg, ndcg_ci = entry(NDCG)
    tau, tau_ci = entry(KENDALL_TAU)
    return RunPoint(ndcg, ndcg_ci, tau, tau_ci)
