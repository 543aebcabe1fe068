"""``llm-rankers`` (ielab, Zhuang et al.): setwise, pairwise, listwise and pointwise prompting.

Preset::

    adapter: llm-rankers
    params: {method: setwise, model: smollm2-135m, options: {num_child: 3, k: 10}}

``method`` picks the toolkit's class (``SetwiseLlmRanker``, ``PairwiseLlmRanker``,
``ListwiseLlmRanker``, ``PointwiseLlmRanker``); ``options`` are that class's own keyword
arguments (``num_child``, ``k``, ``method: heapsort|bubblesort``, ``scoring``,
``window_size``, ``step_size`` ...), passed unchanged. ``model`` is a local folder, a
``.gguf`` file or the embedded name, converted once to a transformers folder: the toolkit
calls ``from_pretrained`` itself. Its causal-LM paths accept Llama-family configs only
(SmolLM2 is one); pointwise is T5-only in 0.0.2.

Order: the toolkit's ``rerank(query, ranking)`` takes the list of ``SearchResult`` in the
order given, and the adapter builds it in the shown order with score 0 for every candidate,
so no first-stage score reaches it. Setwise and pairwise sorting start from that list (the
heap is built over it; bubble sort walks it from the end), so they are order-sensitive by
construction; so is listwise (sliding windows over the given order). Only the ``allpair``
pairwise method scores every pair both ways, and its final ``sorted`` is stable, so ties
keep the shown order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from harness.errors import HarnessError
from harness.rerankers.base import RunContext
from harness.rerankers.toolkits.base import ToolkitAnswer, ToolkitReranker

CLASSES: Mapping[str, tuple[str, str]] = {
    "setwise": ("llmrankers.setwise", "SetwiseLlmRanker"),
    "pairwise": ("llmrankers.pairwise", "PairwiseLlmRanker"),
    "listwise": ("llmrankers.listwise", "ListwiseLlmRanker"),
    "pointwise": ("llmrankers.pointwise", "PointwiseLlmRanker"),
}
# The options each class needs and has no default for (listwise), with the toolkit's README's.
REQUIRED_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "listwise": {"window_size": 4, "step_size": 2, "num_repeat": 1},
}


class LlmRankersReranker(ToolkitReranker):
    toolkit = "llm-rankers"
    module = "llmrankers"
    install_hint: ClassVar[str] = (
        "pip install --no-deps llm-rankers==0.0.2 (it needs only transformers, already in the "
        "llm extra)"
    )
    uses_device = True

    def __init__(
        self,
        name: str,
        context: RunContext,
        method: str = "setwise",
        model: str = "smollm2-135m",
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if method not in CLASSES:
            raise HarnessError(
                f"reranker {name!r}: param 'method' must be one of {', '.join(CLASSES)}, "
                f"got {method!r}"
            )
        options = dict(options or {})
        super().__init__(name, context, {"method": method, "model": model, "options": options})
        self.require(name)
        import importlib

        from harness.models.loading import model_folder

        folder, self.revision = model_folder(model)
        self.model = model
        module_name, class_name = CLASSES[method]
        cls = getattr(importlib.import_module(module_name), class_name)
        kwargs = {**REQUIRED_DEFAULTS.get(method, {}), **options}
        try:
            self.ranker = cls(
                model_name_or_path=str(folder),
                tokenizer_name_or_path=str(folder),
                device=context.device,
                **kwargs,
            )
        except TypeError as exc:
            raise HarnessError(f"reranker {name!r}: {class_name} options: {exc}") from exc
        except NotImplementedError as exc:
            raise HarnessError(f"reranker {name!r}: {class_name}: {exc}") from exc

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "model": self.model, "model_revision": self.revision}

    def _rank(self, query: str, docs: list[str], query_id: str) -> ToolkitAnswer:
        from llmrankers.rankers import SearchResult

        ranking = [SearchResult(docid=str(i), score=0.0, text=doc) for i, doc in enumerate(docs)]
        results = self.ranker.rerank(query, ranking)
        calls = int(getattr(self.ranker, "total_compare", 0) or 0) or 1
        extra = {
            "prompt_tokens": int(getattr(self.ranker, "total_prompt_tokens", 0) or 0),
            "completion_tokens": int(getattr(self.ranker, "total_completion_tokens", 0) or 0),
        }
        return ToolkitAnswer(order=[int(r.docid) for r in results], calls=calls, extra=extra)
