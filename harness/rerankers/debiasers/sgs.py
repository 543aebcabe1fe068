"""Stochastic greedy selection (SGS; as InvariRank's baseline defines it): rerank the remaining
candidates, move the top ``selection_size`` of the inner output to the end of the answer, reshuffle
what is left, and repeat until one candidate (or none) remains.

The first inner call sees the shown order; every later one sees the remaining candidates in
the order of the previous step's list permuted by a position permutation drawn from the
content-seeded generator (:func:`harness.rerankers.debiasers.meta.content_rng`). A lone last
candidate
needs no call. Cost per order: about ``n / selection_size`` inner calls on shrinking lists, each
on a candidate set of only the remaining candidates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from harness.data.model import CandidateSet
from harness.rerankers.base import RerankOutput
from harness.rerankers.debiasers.meta import (
    InnerTally,
    MetaParams,
    MetaReranker,
    content_rng,
    positive_int,
)


@dataclass(frozen=True)
class SgsParams(MetaParams):
    """SGS: ``selection_size`` (candidates taken per step, >= 1)."""

    selection_size: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_int("selection_size", self.selection_size)


class StochasticGreedySelection(MetaReranker):
    """Greedy selection over reshuffled remainders. Params: :class:`SgsParams`."""

    method = "sgs"
    params_type = SgsParams
    params: SgsParams

    def step_permutations(self, candidate_set: CandidateSet) -> list[np.ndarray]:
        """One position permutation per step after the first, for the remainder's length."""
        rng = content_rng(self.method, self.params.seed, candidate_set)
        n, take = len(candidate_set), self.params.selection_size
        sizes = range(n - take, 1, -take)
        return [rng.permutation(size) for size in sizes]

    def _rerank_batch(self, candidate_set: CandidateSet, orders: np.ndarray) -> list[RerankOutput]:
        started = time.perf_counter()
        steps = self.step_permutations(candidate_set)
        ids = candidate_set.doc_ids
        position = {doc_id: i for i, doc_id in enumerate(ids)}
        done = []
        for row in orders:
            remaining = [int(i) for i in row]
            selected: list[int] = []
            tally = InnerTally()
            step = 0
            while len(remaining) > 1:
                subset = sorted(remaining)  # first-stage order: the sub-set's own indices
                local = {item: k for k, item in enumerate(subset)}
                sub = replace(
                    candidate_set, candidates=tuple(candidate_set.candidates[i] for i in subset)
                )
                shown = np.array([[local[i] for i in remaining]], dtype=np.int64)
                output = self.inner.rerank(sub, shown)[0]
                tally.add(output.facts)
                chosen = [position[d] for d in output.ranking[: self.params.selection_size]]
                selected.extend(chosen)
                remaining = [i for i in remaining if i not in chosen]
                if len(remaining) > 1:
                    remaining = [remaining[k] for k in steps[step]]
                step += 1
            selected.extend(remaining)
            done.append((selected, tally))
        call_ms = (time.perf_counter() - started) * 1000.0
        extra = {"method": self.method, "selection_size": self.params.selection_size}
        return [
            RerankOutput(
                ranking=tuple(ids[i] for i in selected),
                facts=tally.facts(call_ms, len(orders), extra),
            )
            for selected, tally in done
        ]
