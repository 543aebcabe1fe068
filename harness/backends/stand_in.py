"""A local backend's dry-run double: the real model for a short probe, then stand-in answers.

``harness run --dry-run`` on an in-process model (transformers, vLLM) must count what the run
would compute without computing it. The reranker runs unchanged on this wrapper, so prompts
are rendered and tokenized by the method's own code with the model's real tokenizer, and
forward passes are counted by the method's own ``CallFacts``, as the cost columns count
them. While ``probing``, every call goes to the real model and the generated answer lengths
are recorded; afterwards the model is not called: next-token and masked log-probabilities
are zeros (every candidate ties), a generation is the probe's mean answer length of padding
(parsed as a missing answer, so a sliding window's later windows show the order the earlier
ones left, as after a real unparseable answer), attention weights are zeros.

What that leaves estimated, not counted: the generated tokens (and so the decoding passes)
of a generative method beyond the probe, and the prompt tokens of windows after the first
of a sliding window (their order follows a stand-in answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.backends.base import (
    Generation,
    GenerationRequest,
    MaskedRequest,
    NextTokenScores,
    QueryAttention,
    TokenBatch,
)


class StandInBackend:
    """The wrapped backend while ``probing``, stand-in answers after; otherwise the backend
    it wraps (tokenizer, identity, stop tokens, added marker tokens)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.probing = True
        self.generated_rows = 0  # rows the real model generated for, while probing
        self.generated_tokens = 0  # and the tokens it generated for them

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def answer_length(self) -> int | None:
        """Mean tokens the real model generated per answer in the probe (None: it generated
        nothing)."""
        if not self.generated_rows:
            return None
        return max(1, round(self.generated_tokens / self.generated_rows))

    def next_token_logprobs(self, batch: TokenBatch, token_ids: Sequence[int]) -> NextTokenScores:
        if self.probing:
            return self._inner.next_token_logprobs(batch, token_ids)
        rows = len(batch.rows)
        return NextTokenScores(
            logprobs=np.zeros((rows, len(token_ids)), dtype=np.float32),
            mass=(1.0,) * rows,
            top_is_chosen=(True,) * rows,
            generated_tokens=(1,) * rows,
            missing=(0,) * rows,
        )

    def generate(self, batch: TokenBatch, request: GenerationRequest) -> Generation:
        if self.probing:
            generation = self._inner.generate(batch, request)
            self.generated_rows += len(generation.tokens)
            self.generated_tokens += sum(len(t) for t in generation.tokens)
            return generation
        length = min(self.answer_length or request.max_new_tokens, request.max_new_tokens)
        rows = len(batch.rows)
        return Generation(
            tokens=((0,) * length,) * rows,
            texts=("",) * rows,
            stopped=(False,) * rows,
            decode_steps=length - 1,
        )

    def prefix(self, token_ids: Sequence[int]) -> Any:
        return self._inner.prefix(token_ids) if self.probing else None

    def masked_logprobs(self, prefix: Any, request: MaskedRequest) -> np.ndarray:
        if self.probing:
            return self._inner.masked_logprobs(prefix, request)
        return np.zeros(len(request.target_rows), dtype=np.float64)

    def query_attention(
        self, prefixes: np.ndarray, queries: Sequence[Sequence[int]], layers: Sequence[int]
    ) -> QueryAttention:
        if self.probing:
            return self._inner.query_attention(prefixes, queries, layers)
        _, heads = self._inner.attention_shape
        shape = (len(prefixes), len(queries), len(layers), heads, np.shape(prefixes)[1])
        # as the transformers backend counts: the prefixes in one pass, then the queries
        return QueryAttention(np.zeros(shape, dtype=np.float32), max(layers) + 1, 2, 0, 0)
