"""The one interface every reranker implements.

A reranker receives one candidate set and a batch of orders — an integer array of shape
``[P, n]`` whose row ``p`` lists candidate indices (into ``candidate_set.candidates``) in the
order they are shown — and returns, per row, the ranking it produced. Batching orders of
the same set lets LLM rerankers share the prompt prefix and gather token segments with
the index array on CPU or GPU.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar, Literal

import numpy as np

from harness.context import RunContext as RunContext  # the methods' callers find it here
from harness.data.model import CandidateSet
from harness.errors import HarnessError
from harness.usage import HttpUsage, Usage

ParseStatus = Literal["ok", "wrong_format", "repetition", "missing", "not_applicable"]


@dataclass(frozen=True)
class CallFacts:
    """What one reranker call cost and how its output was obtained.

    ``latency_ms`` is the wall time of the call that produced this order's output divided
    by the number of orders that call served (``batch_size``), so it is comparable across
    batch sizes; ``call_latency_ms`` is the undivided wall time. ``http``: the requests to a
    server behind this output (none on a local backend); it is not stored as such, ``extra``
    keeps each request's record, from which :func:`harness.usage.stored_usage` reads it back.
    """

    latency_ms: float
    call_latency_ms: float
    batch_size: int = 1
    prompt_tokens: int = 0
    generated_tokens: int = 0
    forward_passes: int = 0
    parse_status: ParseStatus = "not_applicable"
    extra: Mapping[str, Any] = field(default_factory=dict)
    http: HttpUsage = field(default_factory=HttpUsage)

    @property
    def usage(self) -> Usage:
        """This output's cost as one record, summed with ``+`` by whoever tallies it."""
        return Usage(self.forward_passes, self.prompt_tokens, self.generated_tokens, self.http)

    def plus(self, usage: Usage, **changes: Any) -> CallFacts:
        """These facts with ``usage`` added to their cost (and ``changes`` made)."""
        cost = self.usage + usage
        return replace(
            self,
            forward_passes=cost.forward_passes,
            prompt_tokens=cost.prompt_tokens,
            generated_tokens=cost.generated_tokens,
            http=cost.http,
            **changes,
        )

    def to_dict(self) -> dict[str, Any]:
        """The stored ``facts`` (the requests' records are in ``extra``)."""
        data = asdict(self)
        del data["http"]
        return data


@dataclass(frozen=True)
class RerankOutput:
    """The reranker's output for one shown order.

    ``ranking`` holds every candidate id exactly once, best first. ``scores`` (optional)
    maps candidate id to the reranker's score, higher is better.
    """

    ranking: tuple[str, ...]
    facts: CallFacts
    scores: Mapping[str, float] | None = None


class Reranker(ABC):
    """Base class for rerankers. Subclasses implement :meth:`_rerank_batch`.

    ``order_invariant`` declares that the method's output must not depend on the order
    the candidates are shown in; gates fail such a reranker on any order-dependent query.
    """

    order_invariant: bool = False
    uses_device: bool = False
    """Whether the run's ``--device`` is where this reranker computes (a model does; the
    controls compute nothing there), so provenance records the device actually used."""
    batch_cap: ClassVar[int] = 4
    """The most orders of one query a call takes when the run leaves ``--batch-size`` unset
    (see :func:`auto_batch_size`); a method whose cost per order falls with the batch (one
    decoding pass serves every order) sets more."""

    def __init__(self, name: str, context: RunContext) -> None:
        self.name = name
        self.context = context

    @property
    def parallel_calls(self) -> int:
        """Calls the runner may make at once from several threads (only rerankers on a remote
        backend, whose calls wait on a server, say more than 1)."""
        return 1

    def identity(self) -> dict[str, Any]:
        """Model and prompt identity for provenance (name, revision, dtype, prompt hash...)."""
        return {"adapter": type(self).__name__, "order_invariant": self.order_invariant}

    def rerank(self, candidate_set: CandidateSet, orders: np.ndarray) -> list[RerankOutput]:
        """Rerank ``candidate_set`` once per row of ``orders`` and validate the outputs."""
        orders = np.asarray(orders)
        n = len(candidate_set)
        if orders.ndim != 2 or orders.shape[1] != n:
            raise ValueError(f"orders must have shape [P, {n}], got {orders.shape}")
        outputs = self._rerank_batch(candidate_set, orders)
        if len(outputs) != len(orders):
            raise RuntimeError(
                f"reranker {self.name!r} returned {len(outputs)} outputs for {len(orders)} orders"
            )
        expected = set(candidate_set.doc_ids)
        for output in outputs:
            if len(output.ranking) != n or set(output.ranking) != expected:
                raise HarnessError(
                    f"reranker {self.name!r} returned a ranking for query "
                    f"{candidate_set.query_id!r} that is not a permutation of its {n} candidates"
                )
        return outputs

    @abstractmethod
    def _rerank_batch(self, candidate_set: CandidateSet, orders: np.ndarray) -> list[RerankOutput]:
        """Return one output per row of ``orders``; the base class validates them."""

    def close(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Release models or connections; called once when a run ends."""

    def stop(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Ask calls running in other threads to end soon; the run is being interrupted."""

    def check_data(self, candidate_set: CandidateSet) -> None:  # noqa: B027 - optional hook
        """HarnessError if this set's data cannot be reranked faithfully; the runner calls it
        on every pending set before the first call, so bad data stops a run at its start."""


def auto_batch_size(cap: int, orders: int) -> int:
    """Orders per call for ``orders`` orders of one query with calls of at most ``cap``: the
    fewest calls, of (nearly) equal size, so no call is left with a small remainder (20 orders,
    cap 16: two calls of 10, not 16 + 4)."""
    calls = -(-max(orders, 1) // max(cap, 1))
    return -(-max(orders, 1) // calls)


def ranking_from_scores(doc_ids: Sequence[str], scores: Sequence[float]) -> tuple[str, ...]:
    """Sort ids by score, highest first, breaking ties by id so input order cannot leak."""
    if any(s != s for s in scores):
        raise ValueError("scores contain NaN")
    return tuple(doc_id for _, doc_id in sorted(zip((-s for s in scores), doc_ids, strict=True)))
