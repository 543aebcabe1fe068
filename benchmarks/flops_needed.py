"""The FLOPs a reranker call NEEDS, from the method's definition and the model's config.

Not the FLOPs its kernels ran: padding, blocked mask entries and tokens whose outputs nothing
reads are not counted, so a call that computes them shows it as lost efficiency.

What a call needs is read off the requests the method hands its backend (the prompts, masks
and read positions are the method's definition; the backend only chooses how to run them):

* ``prefix(ids)``: the shared span, causal over its S tokens, no logits.
* ``masked_logprobs``: a token is needed when its output is read (the column before a target)
  or a needed token attends to it; each needed token attends to the keys its mask allows.
  So InvariRank needs each segment's ``[ITEM]`` and content tokens but the last, attending the
  span and their segment's earlier tokens; separators, ``[/ITEM]`` and padding are not needed,
  whichever route (dense 4-D mask, packed segments) runs them.
* ``causal_logprobs`` (lft): each row causally up to the column before its last read target.
* ``next_token_logprobs`` (FIRST, pointwise): the batch's shared prefix once, each row's own
  tokens causally after it, logits at each row's last position.
* ``generate`` (RankGPT): the same prefill, then each generated token but the last fed back
  one at a time (attending the prompt and the tokens before it), logits at every step.

Per needed token and layer: the q/k/v/o projections and the (gated) MLP, ``2·K·N`` FLOPs per
``[K, N]`` weight; per read position: the vocabulary projection; per (needed query, allowed
key) pair: ``4 · head_dim`` FLOPs per query head and layer (QKᵀ and PV). Norms, RoPE, softmax
and activations are not counted (well under 1% of the matmuls here). The span or prompt head
that all of a request's rows share counts once per request; nothing else is shared across
orders (the method scores each order on its own prompt), so where a backend shares more
(lft's prefix tree on orders with common prefixes) the efficiency can exceed 1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ModelShape:
    """The matmul shapes of a Llama-style decoder, from its config."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int

    @classmethod
    def of(cls, model: Any) -> ModelShape:
        """From a loaded model (the vocabulary as its output projection has it: markers a
        method added count) or a bare config."""
        config = getattr(model, "config", model)
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        vocab = config.vocab_size
        if hasattr(model, "get_output_embeddings") and model.get_output_embeddings() is not None:
            vocab = int(model.get_output_embeddings().weight.shape[0])
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            intermediate=config.intermediate_size,
            vocab=vocab,
        )

    def layer_weights(self) -> tuple[tuple[int, int], ...]:
        """(in, out) of one layer's weights: q, k, v, o, gate, up, down."""
        h, q, kv, i = (
            self.hidden,
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
            self.intermediate,
        )
        return ((h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h))

    @property
    def linear_per_token(self) -> float:
        return 2.0 * self.layers * sum(k * n for k, n in self.layer_weights())

    @property
    def head_per_row(self) -> float:
        return 2.0 * self.hidden * self.vocab

    @property
    def attention_per_key(self) -> float:
        """Per (query token, key) pair over all layers and query heads: QKᵀ and PV."""
        return 4.0 * self.head_dim * self.heads * self.layers


@dataclass(frozen=True)
class Pass:
    """The needed part of one forward over some rows: ``tokens`` run through every layer,
    ``head_rows`` read through the vocabulary projection, and attention as ``groups`` runs of
    consecutive query tokens (a segment, a row, a decoding step) with ``keys`` (query, key)
    pairs allowed in all."""

    tokens: int
    head_rows: int
    groups: int
    keys: int


@dataclass
class Work:
    """The needed passes of one or more calls."""

    passes: list[Pass] = field(default_factory=list)

    def flops(self, shape: ModelShape) -> dict[str, float]:
        linear = sum(p.tokens for p in self.passes) * shape.linear_per_token
        head = sum(p.head_rows for p in self.passes) * shape.head_per_row
        attention = sum(p.keys for p in self.passes) * shape.attention_per_key
        return {
            "linear": linear,
            "head": head,
            "attention": attention,
            "total": linear + head + attention,
        }


def causal_pass(lengths: Sequence[int], start: int = 0, head_rows: int = 0) -> Pass:
    """Rows of ``lengths`` tokens run causally after ``start`` cached positions."""
    keys = sum(n * start + n * (n + 1) // 2 for n in lengths)
    return Pass(sum(lengths), head_rows, sum(1 for n in lengths if n), keys)


def masked_pass(allowed: np.ndarray, target_rows: np.ndarray, target_columns: np.ndarray) -> Pass:
    """The needed part of a masked forward: ``allowed`` [P, T, S+T] over (cached span, the
    rows' tokens); a target at column c is read from the output at c - 1."""
    p, length, width = allowed.shape
    span = width - length
    need = np.zeros((p, length), dtype=bool)
    need[target_rows, target_columns - 1] = True
    own = allowed[:, :, span:]
    while True:  # add every token a needed token attends to, until nothing changes
        grown = need | (own & need[:, :, None]).any(axis=1)
        if (grown == need).all():
            break
        need = grown
    keys = int(allowed[need].sum())
    # a run: needed tokens that each attend to the token before them (one segment, one row)
    follows = np.zeros_like(need)
    follows[:, 1:] = (
        need[:, 1:] & need[:, :-1] & own[:, np.arange(1, length), np.arange(length - 1)]
    )
    groups = int(need.sum() - follows.sum())
    return Pass(int(need.sum()), len(target_rows), groups, keys)


def prompt_passes(rows: Sequence[Sequence[int]], prefix_len: int) -> list[Pass]:
    """Next-token prompts: the shared prefix once, each row's rest after it, logits at each
    row's last position."""
    shared = [causal_pass([prefix_len])] if prefix_len else []
    rest = [len(row) - prefix_len for row in rows]
    return [*shared, causal_pass(rest, prefix_len, head_rows=len(rows))]


def decode_passes(prompt_lengths: Sequence[int], generated: Sequence[int]) -> list[Pass]:
    """Each generated token but the last fed back, one step at a time over the rows still
    going: it attends its row's prompt and the tokens before it; logits at every step."""
    passes = []
    for step in range(1, max(generated, default=0)):
        going = [n for n, g in zip(prompt_lengths, generated, strict=True) if g > step]
        keys = sum(n + step for n in going)
        passes.append(Pass(len(going), len(going), len(going), keys))
    return passes


@contextmanager
def recorded_needs(backend: Any) -> Iterator[Work]:
    """Record, on this backend instance, the needed work of the requests made inside (the
    outermost call of a request only: a backend that splits it calls itself again)."""
    work = Work()
    depth = [0]
    real = {name: getattr(backend, name) for name in NEEDS if hasattr(backend, name)}
    own = {name: vars(backend)[name] for name in real if name in vars(backend)}

    def wrap(name: str, method: Any) -> Any:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            depth[0] += 1
            try:
                result = method(*args, **kwargs)
            finally:
                depth[0] -= 1
            if depth[0] == 0:
                work.passes.extend(NEEDS[name](result, *args, **kwargs))
            return result

        return recorded

    for name, method in real.items():
        setattr(backend, name, wrap(name, method))
    try:
        yield work
    finally:
        for name in real:
            if name in own:
                setattr(backend, name, own[name])
            else:
                delattr(backend, name)  # the class's method shows through again


def _prefix(result: Any, token_ids: Sequence[int]) -> list[Pass]:
    return [causal_pass([len(token_ids)])]


def _masked(result: Any, prefix: Any, request: Any) -> list[Pass]:
    return [masked_pass(np.asarray(request.allowed), request.target_rows, request.target_columns)]


def _causal(
    result: Any,
    prefix: Any,
    start: int,
    tokens: np.ndarray,
    target_rows: np.ndarray,
    target_columns: np.ndarray,
    rows_per_pass: int | None = None,
) -> list[Pass]:
    last = np.zeros(tokens.shape[0], dtype=np.int64)
    np.maximum.at(last, target_rows, target_columns)  # read from the column before
    return [causal_pass(last.tolist(), start, head_rows=len(target_rows))]


def _next_token(result: Any, batch: Any, token_ids: Sequence[int]) -> list[Pass]:
    return prompt_passes(batch.rows, batch.prefix_len)


def _generate(result: Any, batch: Any, request: Any) -> list[Pass]:
    generated = [len(tokens) for tokens in result.tokens]
    lengths = [len(row) for row in batch.rows]
    return [*prompt_passes(batch.rows, batch.prefix_len), *decode_passes(lengths, generated)]


NEEDS = {
    "prefix": _prefix,
    "masked_logprobs": _masked,
    "causal_logprobs": _causal,
    "next_token_logprobs": _next_token,
    "generate": _generate,
}
