"""One query's outputs over its orders: what every per-query metric kernel reads.

The summary builds one :class:`QueryOrders` per query (its valid outputs, their per-order
effectiveness from the batched ranx call, the judged-relevant set and the query's facts) and
calls each registered kernel (``MetricSpec.kernel``) on it; the noise floor calls the same
kernels on views of it (:meth:`QueryOrders.view`: the identity reruns, or matched blocks of
outputs). Rows index :attr:`QueryOrders.samples`; the row sets say which outputs a kind of
metric reads:

* ``design``: the strategy's own orders (means, spreads, position bias, copy rate);
* ``compared``: what the pairwise metrics compare: the design, or a lone design order and
  the identity reference;
* ``shown_orders``: every shown order, the reference too (``distinct_rankings``); the
  identity reruns of ``--repeats`` are only in ``samples`` (latency and cost count them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Protocol

import numpy as np

from harness.metrics.names import TOP_K
from harness.metrics.stability import best_relevant_ranks, pairwise_stability


class _Label(Protocol):
    @property
    def in_design(self) -> bool: ...
    @property
    def is_repeat(self) -> bool: ...


class Sample(Protocol):
    """What a kernel reads of one output: the fields of :class:`harness.results.store.Sample`
    (a protocol, so the metrics need not know how results are stored)."""

    @property
    def order_index(self) -> int: ...
    @property
    def label(self) -> _Label: ...
    @property
    def shown(self) -> tuple[int, ...]: ...
    @property
    def ranking(self) -> tuple[str, ...]: ...
    @property
    def scores(self) -> Mapping[str, float] | None: ...
    @property
    def facts(self) -> Mapping[str, Any]: ...


Rows = tuple[int, ...]


@dataclass(frozen=True, eq=False)
class QueryOrders:
    """One query's valid outputs (``samples``, by order index) and what metrics read beside
    them. ``doc_ids``: the candidates in their loaded (first-stage) order, which candidate
    indices (``shown``, :meth:`outputs`) refer to. ``effectiveness``: each per-order metric's
    value for every sample (row-aligned). ``grades``: the query's judgments; ``relevant``:
    the candidates at or above the run's relevance level. ``exposure``: the design's top-k
    exposure by input position (hits, trials). ``cells``: rows whose shown orders define the
    position cells the outputs of ``compared`` are read in (PPI's floor reads reruns in the
    design's cells); None = ``compared``'s own."""

    doc_ids: tuple[str, ...]
    samples: tuple[Sample, ...]
    design: Rows
    compared: Rows
    shown_orders: Rows
    effectiveness: Mapping[str, np.ndarray]
    grades: Mapping[str, int]
    relevant: frozenset[str]
    first_stage_ndcg: float
    invalid_share: float
    exposure: tuple[np.ndarray, np.ndarray] | None = None
    cells: Rows | None = None
    # the [S, n] candidate-index arrays of every sample, shared by views of this query
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        doc_ids: Sequence[str],
        samples: Sequence[Sample],
        effectiveness: Mapping[str, np.ndarray],
        grades: Mapping[str, int],
        relevance_level: int,
        *,
        first_stage_ndcg: float,
        invalid_share: float,
        exposure: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> QueryOrders:
        """A query's orders from its valid samples (by order index): the design is the
        samples labelled in design; the pairwise metrics compare the design, or, when it has
        one order, every shown order (that order and the identity reference)."""
        design = tuple(i for i, s in enumerate(samples) if s.label.in_design)
        shown = tuple(i for i, s in enumerate(samples) if not s.label.is_repeat)
        return cls(
            doc_ids=tuple(doc_ids),
            samples=tuple(samples),
            design=design,
            compared=design if len(design) >= 2 else shown,
            shown_orders=shown,
            effectiveness=effectiveness,
            grades=grades,
            relevant=frozenset(doc for doc, grade in grades.items() if grade >= relevance_level),
            first_stage_ndcg=first_stage_ndcg,
            invalid_share=invalid_share,
            exposure=exposure,
        )

    def view(self, rows: Sequence[int], cells: Sequence[int] | None = None) -> QueryOrders:
        """The same query seen through ``rows`` only (its design, compared and shown
        outputs): what the noise floor measures a kernel on. ``cells``: the rows whose shown
        orders the outputs are read in (None = their own)."""
        rows = tuple(rows)
        return replace(
            self,
            design=rows,
            compared=rows,
            shown_orders=rows,
            cells=None if cells is None else tuple(cells),
            exposure=None,
        )

    def rankings(self, rows: Sequence[int]) -> list[tuple[str, ...]]:
        """The outputs (doc ids, best first) of ``rows``."""
        return [self.samples[i].ranking for i in rows]

    def shown(self, rows: Sequence[int]) -> np.ndarray:
        """The shown orders of ``rows`` as candidate indices [len(rows), n]."""
        return self._all("shown")[_index(rows)]

    def outputs(self, rows: Sequence[int]) -> np.ndarray:
        """The outputs of ``rows`` as candidate indices [len(rows), n]."""
        return self._all("output")[_index(rows)]

    def per_order(self, metric: str, rows: Sequence[int]) -> np.ndarray:
        """A per-order metric's values (e.g. ``ndcg@10``) for ``rows``."""
        return self.effectiveness[metric][_index(rows)]

    def facts(self, key: str, rows: Sequence[int] | None = None, default: Any = None) -> list:
        """Each sample's call fact ``key`` (``latency_ms``, ``parse_status``...), over
        ``rows`` or every sample (the identity reruns too)."""
        chosen = self.samples if rows is None else [self.samples[i] for i in rows]
        return [s.facts.get(key, default) for s in chosen]

    @cached_property
    def pairwise(self) -> dict[str, float]:
        """Mean over pairs of the compared outputs of every pairwise stability metric
        (``harness.metrics.stability.pairwise_stability``), computed once per query."""
        return pairwise_stability(self.rankings(self.compared), k=TOP_K)

    @cached_property
    def best_relevant_ranks(self) -> np.ndarray:
        """1-based rank of the best relevant candidate in each design output (NaN: none)."""
        return best_relevant_ranks(self.rankings(self.design), set(self.relevant))

    def _all(self, which: str) -> np.ndarray:
        if not self._arrays:
            index = {doc_id: i for i, doc_id in enumerate(self.doc_ids)}
            self._arrays["shown"] = np.array([s.shown for s in self.samples], dtype=np.int64)
            self._arrays["output"] = np.array(
                [[index[d] for d in s.ranking] for s in self.samples], dtype=np.int64
            )
        return self._arrays[which]


def _index(rows: Sequence[int]) -> np.ndarray:
    return np.asarray(rows, dtype=np.intp)
