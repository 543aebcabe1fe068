"""The built-in metrics' per-query kernels: one :class:`QueryOrders` -> one value.

Each is named by its registry entry (``harness.metrics.registry``, ``kernel=``) and reads
only what the QueryOrders gives; the definitions are in ``harness.results.summary``'s
docstring and docs/metrics.md. A value the design cannot measure is not decided here: the
registry's ``undefined_when`` makes it NaN, with the reason, before a kernel is called.
"""

from __future__ import annotations

import numpy as np

from harness.metrics.names import (
    KENDALL_TAU,
    MRR,
    NDCG,
    RBO,
    SPEARMAN,
    TOP1_AGREEMENT,
    TOP_K,
    TOPK_JACCARD,
    TOPK_SET_AGREEMENT,
)
from harness.metrics.orders import QueryOrders
from harness.metrics.position_bias import position_bias_mad as _position_bias_mad
from harness.metrics.preference import (
    global_preference_inconsistency,
    pairwise_preference_instability,
)
from harness.metrics.stability import nan_stat, shown_order_taus
from harness.metrics.stability import tie_rate as _tie_rate


def n_candidates(q: QueryOrders) -> int:
    return len(q.doc_ids)


def n_orders(q: QueryOrders) -> int:
    return len(q.design)


def ndcg(q: QueryOrders) -> float:
    return float(np.mean(q.per_order(NDCG, q.design)))


def mrr(q: QueryOrders) -> float:
    return float(np.mean(q.per_order(MRR, q.design)))


def ndcg_std(q: QueryOrders) -> float:
    return float(np.std(q.per_order(NDCG, q.design)))


def ndcg_range(q: QueryOrders) -> float:
    return float(np.ptp(q.per_order(NDCG, q.design)))


def ndcg_reference(q: QueryOrders) -> float:
    """The identity order's value: order 0, when it is among the valid outputs."""
    if not q.samples or q.samples[0].order_index != 0:
        return float("nan")
    return float(q.effectiveness[NDCG][0])


def ndcg_first_stage(q: QueryOrders) -> float:
    return q.first_stage_ndcg


def best_relevant_rank_mean(q: QueryOrders) -> float:
    return nan_stat(np.mean, q.best_relevant_ranks)


def best_relevant_rank_var(q: QueryOrders) -> float:
    return nan_stat(np.var, q.best_relevant_ranks)


def kendall_tau(q: QueryOrders) -> float:
    return q.pairwise[KENDALL_TAU]


def rbo(q: QueryOrders) -> float:
    return q.pairwise[RBO]


def top1_agreement(q: QueryOrders) -> float:
    return q.pairwise[TOP1_AGREEMENT]


def topk_jaccard(q: QueryOrders) -> float:
    return q.pairwise[TOPK_JACCARD]


def spearman(q: QueryOrders) -> float:
    return q.pairwise[SPEARMAN]


def topk_set_agreement(q: QueryOrders) -> float:
    return q.pairwise[TOPK_SET_AGREEMENT]


def ppi(q: QueryOrders) -> float:
    """Over the compared outputs, in the cells of their own shown orders (or of ``cells``)."""
    cells = q.compared if q.cells is None else q.cells
    return pairwise_preference_instability(q.shown(cells), q.outputs(q.compared))


def gpi(q: QueryOrders) -> float:
    return global_preference_inconsistency(q.outputs(q.compared))


def distinct_rankings(q: QueryOrders) -> int:
    """Different rankings over every shown order (the reference too; not the reruns)."""
    return len(set(q.rankings(q.shown_orders)))


def position_bias_mad(q: QueryOrders) -> float:
    """The query's own MAD of top-k exposure by input position (NaN with n <= k)."""
    n = len(q.doc_ids)
    exposure = q.exposure
    if exposure is None:
        from harness.metrics.position_bias import exposure_counts

        exposure = exposure_counts(q.shown(q.design), q.outputs(q.design), k=TOP_K)
    return float(_position_bias_mad(*exposure, min(TOP_K, n) / n))


def copy_tau(q: QueryOrders) -> float:
    if not q.design:
        return float("nan")
    return nan_stat(np.mean, shown_order_taus(q.shown(q.design), q.outputs(q.design)))


def tie_rate(q: QueryOrders) -> float:
    """Mean over design outputs with scores (NaN when the reranker gives none)."""
    chosen = [q.samples[i] for i in q.design]
    ties = [_tie_rate(list(s.scores.values())) for s in chosen if s.scores]
    return nan_stat(np.mean, np.array(ties, dtype=float))


def parse_repair_rate(q: QueryOrders) -> float:
    """Share of design outputs whose generated text needed a repair (NaN: not generative)."""
    statuses = q.facts("parse_status", q.design, "not_applicable")
    parsed = [status != "ok" for status in statuses if status != "not_applicable"]
    return float(np.mean(parsed)) if parsed else float("nan")


def latency_ms(q: QueryOrders) -> float:
    return float(np.median(q.facts("latency_ms", default=np.nan)))


def latency_per_set_ms(q: QueryOrders) -> float:
    return float(np.sum(q.facts("latency_ms", default=np.nan)))


def forward_passes(q: QueryOrders) -> float:
    return float(np.mean(q.facts("forward_passes", default=0)))


def invalid_share(q: QueryOrders) -> float:
    return q.invalid_share
