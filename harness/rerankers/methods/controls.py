"""Control rerankers that bracket every real method.

``identity`` returns the order it was shown: the most order-sensitive reranker possible.
``first-stage`` sorts by the first-stage score: order-invariant by construction. A real
reranker's stability numbers only mean something next to these two.
"""

from __future__ import annotations

import time

import numpy as np

from harness.data.model import CandidateSet
from harness.rerankers.base import CallFacts, Reranker, RerankOutput


class IdentityReranker(Reranker):
    """Outputs the shown order unchanged."""

    def _rerank_batch(self, candidate_set: CandidateSet, orders: np.ndarray) -> list[RerankOutput]:
        start = time.perf_counter()
        ids = candidate_set.doc_ids
        rankings = [tuple(ids[i] for i in row) for row in orders]
        return _with_latency(rankings, None, start)


class FirstStageReranker(Reranker):
    """Sorts by first-stage score, ties in the loaded list's order (not the shown order).

    Loaders of TREC runs order ties as trec_eval does, so on those the output reproduces the
    first stage's trec_eval numbers; on a RankGPT JSON file whose scores do not decrease along
    the list, it is the score order, not the file order.
    """

    order_invariant = True

    def _rerank_batch(self, candidate_set: CandidateSet, orders: np.ndarray) -> list[RerankOutput]:
        start = time.perf_counter()
        candidates = candidate_set.candidates
        ranked = sorted(range(len(candidates)), key=lambda i: (-candidates[i].first_stage_score, i))
        ranking = tuple(candidates[i].doc_id for i in ranked)
        scores = {c.doc_id: c.first_stage_score for c in candidates}
        return _with_latency([ranking] * len(orders), [scores] * len(orders), start)


def _with_latency(
    rankings: list[tuple[str, ...]], scores: list[dict[str, float]] | None, start: float
) -> list[RerankOutput]:
    call_ms = (time.perf_counter() - start) * 1000.0
    size = len(rankings)
    facts = CallFacts(latency_ms=call_ms / max(size, 1), call_latency_ms=call_ms, batch_size=size)
    return [
        RerankOutput(ranking=r, facts=facts, scores=None if scores is None else scores[i])
        for i, r in enumerate(rankings)
    ]
