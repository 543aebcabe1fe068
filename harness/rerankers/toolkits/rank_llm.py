"""castorini ``rank-llm``: its listwise RankGPT-style reranker (``SafeOpenai``) against any
OpenAI-compatible server (llama.cpp, vLLM, SGLang, hosted).

Preset::

    adapter: rank-llm
    params:
      model: smollm2-135m                # the model id the server is asked for
      base_url: http://127.0.0.1:8000/v1
      tokenizer: smollm2-135m            # counts prompt tokens (embedded name or folder)
      options: {prompt_mode: rank_GPT, context_size: 4096, window_size: 20, stride: 10}

``options`` are ``SafeOpenai``'s own keyword arguments, passed unchanged. rank-llm's local
rerankers (RankZephyr, RankVicuna, FIRST through ``RankListwiseOSLLM``; LiT5) run on vLLM
and a GPU only: this adapter covers the server path.

Order: the adapter hands rank-llm one ``Request`` whose candidates are in the shown order,
each with score 0, and calls ``rerank_batch(..., shuffle_candidates=False)``. rank-llm's
sliding windows walk that list from its end; it never sorts by the candidates' scores (its
``shuffle_candidates`` would shuffle and rescore them, and is forced off).

Two things this adapter does because of how rank-llm 0.25.7 is packaged, both only inside
the import or the token counts, never in what reaches the model:

* ``rank_llm.rerank`` imports vLLM and LiT5's T5 code at its top even for ``SafeOpenai``;
  where vLLM is not installed, or transformers is 5.x (LiT5's code imports a helper that
  transformers 5 removed), empty stand-in modules (:data:`STAND_INS`) are put in place for the
  import alone and removed after it. The OpenAI path never touches them; the run records which
  were stood in for (``stand_in_modules``).
* ``SafeOpenai`` counts tokens with tiktoken, which downloads its encoding file from the
  internet on first use; with ``tokenizer`` set, the served model's own tokenizer counts
  them instead (the right count for a model that is not OpenAI's, and no download).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

from harness.errors import HarnessError
from harness.rerankers.base import RunContext
from harness.rerankers.toolkits.base import ToolkitAnswer, ToolkitReranker

FORCED = {"shuffle_candidates": False}


# Modules rank_llm 0.25.7 imports on every path and cannot import here: vLLM (not installed:
# it pulls a CUDA torch), and LiT5's copy of T5's code, which imports a transformers helper
# that transformers 5 removed. Only the rerankers that use them (vLLM's, LiT5/FiD) need them.
STAND_INS = ("vllm", "vllm.outputs", "rank_llm.rerank.listwise.rank_fid")


@contextmanager
def stand_ins() -> Iterator[list[str]]:
    """Empty stand-in modules for :data:`STAND_INS` that cannot be imported, for the time of
    rank_llm's import only; yields the names stood in for (recorded in provenance)."""
    missing = [n for n in STAND_INS if n not in sys.modules and not _importable(n)]
    placed: dict[str, types.ModuleType] = {}
    for name in missing:
        placed[name] = _StandIn(name)
        sys.modules[name] = placed[name]
    try:
        yield sorted(placed)
    finally:
        for name, module in placed.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def _importable(name: str) -> bool:
    if name.startswith("vllm"):
        return importlib.util.find_spec("vllm") is not None
    from transformers import modeling_utils

    return hasattr(modeling_utils, "find_pruneable_heads_and_indices")


class _StandIn(types.ModuleType):
    """A module every attribute of which is an empty class: rank_llm names vLLM's types in
    signatures that Python evaluates when the class is defined, and uses none of them here."""

    def __getattr__(self, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {"__module__": self.__name__})


class RankLLMReranker(ToolkitReranker):
    toolkit = "rank-llm"
    module = "rank_llm"
    install_hint: ClassVar[str] = (
        "pip install --no-deps rank-llm==0.25.7 && pip install openai tiktoken dacite "
        "python-dotenv (its declared vllm dependency pulls a CUDA torch; 0.26.0 needs "
        "Python 3.12)"
    )
    remote = True  # the model runs on the server: provenance says so, not --device

    def __init__(
        self,
        name: str,
        context: RunContext,
        model: str,
        base_url: str,
        api_key: str = "none",
        tokenizer: str | None = None,
        timeout: float = 600.0,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        options = dict(options or {})
        forced = sorted(set(options) & {"shuffle_candidates", "keys", "base_url", "model"})
        if forced:
            raise HarnessError(
                f"reranker {name!r}: option {forced[0]!r} is set by the adapter (the shown "
                "order must reach rank-llm unshuffled; model and server are params)"
            )
        settings = {
            "model": model, "base_url": base_url, "tokenizer": tokenizer, "timeout": timeout,
            **options,
        }  # fmt: skip
        super().__init__(name, context, settings)
        self.require(name)
        with stand_ins() as self.stood_in:
            from rank_llm.rerank.listwise.rank_gpt import SafeOpenai
            from rank_llm.rerank.rankllm import PromptMode
        mode = options.pop("prompt_mode", "rank_GPT")
        try:
            options["prompt_mode"] = PromptMode(mode)
        except ValueError:
            raise HarnessError(
                f"reranker {name!r}: prompt_mode {mode!r} is not one of rank-llm's "
                f"{[m.value for m in PromptMode]}"
            ) from None
        options.setdefault("context_size", 4096)
        cls = _adapted(SafeOpenai, tokenizer, timeout)
        try:
            url = base_url if base_url.endswith("/") else base_url + "/"
            self.ranker = cls(model=model, keys=api_key, base_url=url, **options)
        except (TypeError, ValueError) as exc:
            raise HarnessError(f"reranker {name!r}: SafeOpenai: {exc}") from exc
        self.model = model

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "model": self.model, "stand_in_modules": self.stood_in}

    def _rank(self, query: str, docs: list[str], query_id: str) -> ToolkitAnswer:
        from rank_llm.data import Candidate, Query, Request

        request = Request(
            query=Query(text=query, qid=query_id),
            candidates=[
                Candidate(docid=str(i), score=0.0, doc={"text": doc}) for i, doc in enumerate(docs)
            ],
        )
        (result,) = self.ranker.rerank_batch(
            [request],
            rank_start=0,
            rank_end=len(docs),
            populate_invocations_history=True,
            **FORCED,
        )
        history = result.invocations_history or []
        extra = {
            "prompt_tokens": sum(i.input_token_count for i in history),
            "completion_tokens": sum(i.output_token_count for i in history),
            "responses": [i.response for i in history],
        }
        return ToolkitAnswer(
            order=[int(c.docid) for c in result.candidates], calls=len(history), extra=extra
        )


def _adapted(base: type, tokenizer_name: str | None, timeout: float) -> type:
    """``SafeOpenai`` with two changes that leave every prompt and answer as rank-llm makes
    them: a failed request raises (rank-llm 0.25.7 retries forever, every 30 s, so a dead or
    slow server would hang the run; here the openai client's own retries, then a one-line
    error), and, with ``tokenizer``, token counts from the served model's tokenizer."""
    import openai

    from harness.errors import HarnessError

    count = _counter(tokenizer_name) if tokenizer_name else None

    class AdaptedSafeOpenai(base):  # type: ignore[misc, valid-type]
        def _call_completion(
            self, *args: Any, return_text: bool = False, reduce_length: bool = False, **kw: Any
        ) -> Any:
            try:
                completion = openai.chat.completions.create(*args, **kw, timeout=timeout)
            except openai.OpenAIError as exc:
                raise HarnessError(
                    f"rank-llm's request to {openai.base_url} failed: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}"
                ) from exc
            return completion.choices[0].message.content if return_text else completion

        if count is not None:

            def run_llm(self, prompt: Any, current_window_size: int | None = None) -> Any:
                response = self._call_completion(
                    messages=prompt, temperature=0, return_text=True, model=self._model
                )
                return response, count(response or "")

            def num_output_tokens(self, current_window_size: int | None = None) -> int:
                size = current_window_size or self._window_size
                return count(" > ".join(f"[{i + 1}]" for i in range(size)))

            def get_num_tokens(self, prompt: Any) -> int:
                if isinstance(prompt, str):
                    return count(prompt) + 3
                return sum(count(str(v)) for m in prompt for v in m.values()) + 3

    return AdaptedSafeOpenai


def _counter(tokenizer_name: str) -> Any:
    """Token count of a text by the served model's own tokenizer (a local folder)."""
    from transformers import AutoTokenizer

    from harness.models.loading import model_folder

    folder, _ = model_folder(tokenizer_name)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count
