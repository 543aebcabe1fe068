"""AnswerDotAI ``rerankers``: ``Reranker(model, model_type=..., **options).rank(query, docs)``.

Preset::

    adapter: rerankers
    params:
      model: path/to/a/cross-encoder      # a folder, an embedded name, or a hub id
      model_type: cross-encoder           # the toolkit's own: t5, colbert, llm-layerwise ...
      options: {batch_size: 16}           # the ranker class's keyword arguments, unchanged

Every ``model_type`` the toolkit maps in ``rerankers.models.AVAILABLE_RANKERS`` is reachable;
which of them import here depends on that type's extra (docs/toolkits.md). An embedded name
or ``.gguf`` file is converted once to a transformers folder; any other string that is not a
local folder is handed to the toolkit as it is, so it loads from the hub where one is
reachable.

Order: the adapter calls ``rank(query, docs, doc_ids)`` with the docs in the shown order and
their shown positions as ids; the toolkit gets no first-stage scores. Its pointwise rankers
score each doc and sort with Python's stable ``sorted``, so equal scores keep the shown order;
its listwise ones (RankGPT, rank-llm) take the list as given.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from harness.errors import HarnessError
from harness.rerankers.base import RunContext
from harness.rerankers.toolkits.base import ToolkitAnswer, ToolkitReranker


class AnswerDotAIReranker(ToolkitReranker):
    toolkit = "rerankers"
    module = "rerankers"
    install_hint: ClassVar[str] = (
        "pip install rerankers==0.10.0 (no dependencies of its own; its transformers rankers "
        "use the llm extra's torch and transformers)"
    )
    uses_device = True

    def __init__(
        self,
        name: str,
        context: RunContext,
        model: str,
        model_type: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        options = dict(options or {})
        settings = {"model": model, "model_type": model_type, "options": options}
        super().__init__(name, context, settings)
        toolkit = self.require(name)
        self.model, self.revision = _model_source(model)
        kwargs = {"verbose": 0, **options}  # the settings record what the preset gave
        if "device" not in kwargs and model_type not in {None, "rankgpt", "rankllm"}:
            kwargs["device"] = context.device
        try:
            ranker = toolkit.Reranker(self.model, model_type=model_type, **kwargs)
        except TypeError as exc:
            raise HarnessError(f"reranker {name!r}: rerankers options: {exc}") from exc
        if ranker is None:  # the toolkit prints why and returns None when a type's extra is missing
            raise HarnessError(
                f"reranker {name!r}: rerankers could not build model_type {model_type!r} for "
                f"{model!r}: that type's dependencies are not installed (pip install "
                f"'rerankers[<extra>]', docs/toolkits.md)"
            )
        self.ranker = ranker
        self.ranker_class = type(ranker).__name__

    def identity(self) -> dict[str, Any]:
        return {
            **super().identity(),
            "model": self.settings["model"],
            "model_revision": self.revision,
            "toolkit_class": self.ranker_class,
        }

    def _rank(self, query: str, docs: list[str], query_id: str) -> ToolkitAnswer:
        results = self.ranker.rank(query=query, docs=docs, doc_ids=list(range(len(docs))))
        order = [int(r.document.doc_id) for r in results.results]
        scores = None
        if results.has_scores and len(order) == len(docs):
            by_position = {int(r.document.doc_id): r.score for r in results.results}
            scores = [float(by_position[i]) for i in range(len(docs))]
        return ToolkitAnswer(order=order, scores=scores, calls=1)


def _model_source(model: str) -> tuple[str, str]:
    """A local folder for embedded names, ``.gguf`` files and folders; a hub id unchanged."""
    from harness.models.loading import EMBEDDED_MODELS, model_folder

    if model in EMBEDDED_MODELS or model.endswith(".gguf") or Path(model).expanduser().is_dir():
        folder, revision = model_folder(model)
        return str(folder), revision
    return model, "hub"
