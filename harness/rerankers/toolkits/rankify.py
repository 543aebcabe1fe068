"""Rankify (DataScienceUIBK): two dozen rerankers behind ``Reranking(method, model_name)``.

Preset::

    adapter: rankify
    params: {method: rankgpt, model: llamav3.1-8b, options: {}}

Not installable beside this harness: rankify 0.1.4 pins ``transformers==4.45.2`` (the
harness's LLM stack needs transformers 5), ``pandas==2.2.3``, ``sentence-transformers``,
``onnxruntime`` and more, and its ``reranking`` extra pins ``vllm==0.7.0``; it imports every
reranker at once, so no ``--no-deps`` subset imports. Run it in its own environment (its
pins), with this harness installed there without the ``llm`` extra. The adapter's wiring is
tested against stand-ins of rankify's classes (tests/test_toolkits.py).

Order: the adapter builds one rankify ``Document`` whose ``contexts`` are in the shown order,
each with score 0 and its shown position as id, calls ``Reranking.rank([document])`` and
reads ``document.reorder_contexts``. Rankify's listwise rerankers (RankGPT's sliding windows)
walk ``contexts`` as given; its pointwise ones sort by their own new scores (Python's stable
sort: ties keep the shown order), never by the first-stage score, which they are not given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from harness.errors import HarnessError
from harness.rerankers.base import RunContext
from harness.rerankers.toolkits.base import ToolkitAnswer, ToolkitReranker


class RankifyReranker(ToolkitReranker):
    toolkit = "rankify"
    module = "rankify.models.reranking"
    install_hint: ClassVar[str] = (
        "rankify 0.1.4 pins transformers==4.45.2 (and vllm==0.7.0 for its LLM rerankers), "
        "which conflicts with this harness's llm extra: install it in its own environment "
        "(docs/toolkits.md)"
    )
    uses_device = True

    def __init__(
        self,
        name: str,
        context: RunContext,
        method: str,
        model: str,
        api_key: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        options = dict(options or {})
        super().__init__(name, context, {"method": method, "model": model, "options": options})
        reranking = self.require(name)
        try:
            self.ranker = reranking.Reranking(
                method=method, model_name=model, api_key=api_key, **options
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise HarnessError(f"reranker {name!r}: rankify Reranking: {exc}") from exc
        self.model = model

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "model": self.model}

    def _rank(self, query: str, docs: list[str], query_id: str) -> ToolkitAnswer:
        from rankify.dataset.dataset import Answer, Context, Document, Question

        contexts = [Context(score=0.0, id=str(i), text=doc) for i, doc in enumerate(docs)]
        document = Document(question=Question(query), answers=Answer([]), contexts=contexts)
        self.ranker.rank([document])
        # Only the order is read: a listwise method leaves the scores it was given (0) in place.
        reordered = document.reorder_contexts or []
        return ToolkitAnswer(order=[int(c.id) for c in reordered], calls=1)
