"""What every toolkit adapter shares: shown order in, ranking out, calls timed, provenance.

A subclass says which toolkit it wraps (``toolkit``, its distribution name on the package
index and the import that proves it is installed) and implements :meth:`_rank`, which gets the
query text and the candidates exactly in the order the harness shows them and returns the
toolkit's ranking as positions into that list. Nothing here sorts by the first-stage score:
the first-stage scores are never handed to a toolkit (where it needs one, the adapter passes a
constant), so a toolkit that sorts by them first could not undo the shown order.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import time
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from harness.data.model import CandidateSet, TextQuery
from harness.errors import HarnessError
from harness.rerankers.base import CallFacts, Reranker, RerankOutput, RunContext


@dataclass(frozen=True)
class ToolkitAnswer:
    """A toolkit's ranking of one shown order: ``order`` holds positions into the shown list,
    best first; ``scores`` (one per shown position) where the toolkit gives them; ``calls``
    the model calls it made (prompts sent, comparisons, batches: whatever the toolkit counts)."""

    order: Sequence[int]
    scores: Sequence[float] | None = None
    calls: int = 1
    extra: Mapping[str, Any] = field(default_factory=dict)


class ToolkitReranker(Reranker):
    """Base of the toolkit adapters: one toolkit call per shown order. Each output's facts
    carry that call's wall time and the model calls the toolkit made for it
    (``forward_passes`` and ``extra.toolkit_calls``); the identity (fixed for a run, so a
    resumed run can be checked against it) carries the toolkit's name, version and settings."""

    toolkit: ClassVar[str]
    """The toolkit's distribution name on the package index (``rank-llm``)."""
    module: ClassVar[str]
    """The module whose import proves the toolkit is installed (``rank_llm``)."""
    install_hint: ClassVar[str]
    """How to install the toolkit without pulling a CUDA build or vLLM (one line)."""

    def __init__(self, name: str, context: RunContext, settings: Mapping[str, Any]) -> None:
        super().__init__(name, context)
        self.settings = dict(settings)

    @classmethod
    def require(cls, preset_name: str) -> Any:
        """Import the toolkit, or a one-line error naming it and how to install it."""
        try:
            return importlib.import_module(cls.module)
        except ImportError as exc:
            raise HarnessError(
                f"reranker {preset_name!r}: the {cls.toolkit} toolkit is not installed "
                f"({type(exc).__name__}: {exc}); {cls.install_hint}"
            ) from exc

    @classmethod
    def version(cls) -> str:
        try:
            return importlib.metadata.version(cls.toolkit)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    def identity(self) -> dict[str, Any]:
        return {
            **super().identity(),
            "toolkit": self.toolkit,
            "toolkit_version": self.version(),
            "toolkit_settings": self.settings,
        }

    def _rerank_batch(self, candidate_set: CandidateSet, orders: np.ndarray) -> list[RerankOutput]:
        from harness.rerankers.prompts.base import candidate_text, render_context

        query = candidate_set.query
        text = query.text if isinstance(query, TextQuery) else render_context(query)
        candidates = candidate_set.candidates
        outputs = []
        for row in orders:
            shown = [candidates[int(i)] for i in row]
            start = time.perf_counter()
            answer = self._rank(text, [candidate_text(c) for c in shown], candidate_set.query_id)
            seconds = time.perf_counter() - start
            ids = [c.doc_id for c in shown]
            order = [int(i) for i in answer.order]
            if sorted(order) != list(range(len(ids))):
                raise HarnessError(
                    f"reranker {self.name!r} ({self.toolkit}) on query "
                    f"{candidate_set.query_id!r}: the toolkit returned positions "
                    f"{order[:8]}..., not each of 0..{len(ids) - 1} once"
                )
            scores = (
                dict(zip(ids, (float(s) for s in answer.scores), strict=True))
                if answer.scores is not None
                else None
            )
            facts = CallFacts(
                latency_ms=seconds * 1000.0,
                call_latency_ms=seconds * 1000.0,
                forward_passes=answer.calls,
                extra={"toolkit_calls": answer.calls, **answer.extra},
            )
            outputs.append(RerankOutput(tuple(ids[i] for i in order), facts, scores))
        return outputs

    @abstractmethod
    def _rank(self, query: str, docs: list[str], query_id: str) -> ToolkitAnswer:
        """Rank ``docs`` (in the shown order) for ``query`` with the toolkit."""
