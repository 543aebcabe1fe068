"""RankGPT-style generative listwise reranking, on any backend that generates.

Each window is a numbered prompt (``[1] passage``, ``[2] passage`` …); the model writes a
permutation such as ``[3] > [1] > [2]``, which :mod:`permutation_parser` repairs and grades.
Decoding is greedy by default (temperature 0: a toolkit whose default drifted to 1.0 lost
about 2 NDCG points), and generation stops at the model's end-of-turn token or after the
length of a complete answer for the window plus a little slack — so a rambling model is cut
off instead of filling the context. The answer budget is measured with the model's own
tokenizer on the longest answer the window allows.

One class for every backend: the transformers and vLLM runs share the answer budget, the
``max_new_tokens`` check, ``ignore_eos`` and the parser.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from harness.backends.base import Backend, Capability, GenerationRequest
from harness.rerankers.base import ParseStatus, RunContext
from harness.rerankers.methods.listwise import ListwiseReranker, WindowPrompt, WindowResult
from harness.rerankers.params import RankGPTParams
from harness.rerankers.prompts.permutation_parser import parse_permutation
from harness.usage import HttpUsage

ANSWER_SLACK = 4  # tokens beyond a complete answer: a leading space/newline, the end of turn
KEPT_OUTPUT_CHARS = 400  # raw answer text kept per window in the call facts


def answer_budget(tokenizer: Any, size: int, slack: int = ANSWER_SLACK) -> int:
    """Tokens of the longest complete answer for a window of ``size`` (``[size] > … > [1]``,
    tokenized as a whole) plus ``slack``."""
    answer = " > ".join(f"[{i}]" for i in range(size, 0, -1))
    return len(tokenizer.encode(answer, add_special_tokens=False)) + slack


def rankgpt_result(
    text: str,
    size: int,
    *,
    prompt_tokens: int,
    generated_tokens: int,
    stopped: bool,
    call: Mapping[str, Any] | None = None,
) -> WindowResult:
    """Parse one window's answer into a window result (one forward pass per generated token);
    ``call``: what a remote backend reported about the request (kept as ``http``)."""
    return generated_window_result(
        text,
        parse_permutation(text, size),
        prompt_tokens=prompt_tokens,
        generated_tokens=generated_tokens,
        stopped=stopped,
        call=call,
    )


class ParsedAnswer(Protocol):
    """What a generative method's parser reads from an answer (permutation and title parsers)."""

    @property
    def permutation(self) -> tuple[int, ...]: ...
    @property
    def status(self) -> ParseStatus: ...
    @property
    def repairs(self) -> dict[str, int]: ...


def generated_window_result(
    text: str,
    parsed: ParsedAnswer,
    *,
    prompt_tokens: int,
    generated_tokens: int,
    stopped: bool,
    call: Mapping[str, Any] | None = None,
    **detail: Any,
) -> WindowResult:
    """A generated answer's window result, whatever parsed it: the answer (cut), whether a stop
    ended it, the parser's repairs and ``detail``; one forward pass per generated token."""
    recorded = {"output": text[:KEPT_OUTPUT_CHARS], "stopped": stopped, **detail, **parsed.repairs}
    if call:
        recorded["http"] = dict(call)
    return WindowResult(
        permutation=parsed.permutation,
        status=parsed.status,
        prompt_tokens=prompt_tokens,
        generated_tokens=generated_tokens,
        forward_passes=generated_tokens,
        detail=recorded,
        http=HttpUsage.of_record(call) if call else HttpUsage(),
    )


class RankGPTReranker(ListwiseReranker):
    """Generates ``[i] > [j] > …`` per window on any backend that generates.

    Params: :class:`~harness.rerankers.params.RankGPTParams`. ``temperature`` above 0 samples
    with a seed derived from the run seed and the batch's tokens, so a rerun of the same call
    reproduces it. Greedy runs answer each distinct window prompt of a call once
    (``window_memo``, :mod:`~harness.rerankers.methods.listwise`).
    """

    method = "rankgpt"
    identifier_style = "numeric"
    requires = frozenset({Capability.TOKENIZER, Capability.GENERATE})
    params_type = RankGPTParams
    params: RankGPTParams
    # Every decoding step reads all the weights once for the whole batch, so a step's cost
    # barely grows with its rows (SmolLM2-135M on 2 CPU cores: 6 rows cost 1.75x less per
    # row than 4): a run without --batch-size decodes up to 16 orders of a query together.
    batch_cap = 16

    def __init__(
        self,
        name: str,
        context: RunContext,
        backend: Backend,
        params: RankGPTParams | None = None,
    ) -> None:
        super().__init__(name, context, backend, params)
        self.stop_ids = backend.stop_token_ids()

    def identity(self) -> dict[str, Any]:
        temperature = self.params.temperature
        return {
            **super().identity(),
            "decoding": "greedy" if temperature == 0.0 else "sampling",
            "temperature": temperature,
            "max_new_tokens": self.params.max_new_tokens or f"answer length + {ANSWER_SLACK}",
            "stop_token_ids": sorted(self.stop_ids),
            "ignore_eos": self.params.ignore_eos,
            "window_memo": self.memo_windows,  # repeated window prompts answered once
        }

    @property
    def memo_windows(self) -> bool:
        """Greedy decoding answers a prompt the same wherever it appears; a sampled answer
        draws its seed from the whole call's prompts, so it keeps every window."""
        return self.params.window_memo and self.params.temperature == 0.0

    def budget(self, size: int) -> int:
        return self.params.max_new_tokens or answer_budget(self.tokenizer, size)

    def window_budget(self, windows: Sequence[WindowPrompt]) -> int:
        """New tokens allowed to each window of a call (one number: the call decodes together)."""
        return self.budget(len(windows[0].labels))

    def window_result(self, window: WindowPrompt, text: str, **facts: Any) -> WindowResult:
        """One window's answer, parsed; ``facts``: token counts, ``stopped``, ``call``."""
        return rankgpt_result(text, len(window.labels), **facts)

    def rank_windows(self, windows: Sequence[WindowPrompt]) -> list[WindowResult]:
        batch = self.encode(windows)
        budget = self.window_budget(windows)
        self.check_fits(batch, budget)
        request = GenerationRequest(
            max_new_tokens=budget,
            stop_ids=self.stop_ids,
            temperature=self.params.temperature,
            seed=_call_seed(self.context.seed, batch.rows) if self.params.temperature else None,
            ignore_stop=self.params.ignore_eos,
        )
        generation = self.backend.generate(batch, request)
        calls = generation.calls or tuple({} for _ in windows)
        return [
            self.window_result(
                window,
                text,
                prompt_tokens=len(row),
                generated_tokens=len(tokens),
                stopped=stopped,
                call=call,
            )
            for window, row, tokens, text, stopped, call in zip(
                windows,
                batch.rows,
                generation.tokens,
                generation.texts,
                generation.stopped,
                calls,
                strict=True,
            )
        ]


def _call_seed(seed: int, rows: Sequence[Sequence[int]]) -> int:
    """A sampling seed that depends only on the run seed and the prompts of the call."""
    digest = hashlib.sha256(repr((seed, tuple(map(tuple, rows)))).encode()).digest()
    return int.from_bytes(digest[:8], "little")
