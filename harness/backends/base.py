"""What a reranking method needs from a model, independent of the library that runs it.

A method (FIRST, RankGPT-style, pointwise, InvariRank …) is written once against
:class:`Backend`; a backend (transformers, vLLM, an OpenAI API server) implements what it can
and declares it in ``capabilities``. A method lists what it ``requires``; asking a backend for
a capability it lacks is a one-line error naming both, raised before any model is loaded.

Prompts travel as token ids (:class:`TokenBatch`), because the methods' guarantees are about
tokens: FIRST reads exactly one identifier token, InvariRank lays out token segments. The
``prefix_len`` of a batch marks the tokens every row shares; a backend reuses them however it
can (a broadcast KV cache on transformers, automatic prefix caching on vLLM). A backend with
no tokenizer (text in, text and log-probs out) would declare no ``TOKENIZER`` and take
text-level requests instead; methods that need token ids say so in ``requires``.

The types here are plain data (tuples and NumPy arrays), so this module imports no model
library and the method modules stay importable without torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.backends.params import ModelParams
    from harness.context import RunContext


class Capability(StrEnum):
    """One thing a backend can do for a method."""

    TOKENIZER = "tokenizer"  # a tokenizer with the model's chat template; prompts as token ids
    NEXT_TOKEN_LOGPROBS = "next_token_logprobs"  # log p(chosen token | prompt) for a batch
    GENERATE = "generate"  # greedy or seeded sampling with stop tokens and a length cap
    MASKED_FORWARD = "masked_forward"  # custom 4-D mask + explicit positions over a prefix
    ADD_TOKENS = "add_tokens"  # new special tokens with deterministic embeddings
    QUERY_ATTENTION = "query_attention"  # attention of appended query tokens, chosen layers


Turns = tuple[tuple[str, str], ...]  # (role, content) chat messages, in order


@dataclass(frozen=True)
class TokenBatch:
    """Token ids of a batch of prompts and the length of their shared, reusable prefix.

    ``chats``: per row, the (role, content) turns the row was rendered from (empty where the
    method has none). A backend that sends messages to a server which applies its own chat
    template (:attr:`Backend.takes_messages`) sends these; the rows are then the local
    rendering, used for counting and fitting only."""

    rows: tuple[tuple[int, ...], ...]
    prefix_len: int
    chats: tuple[Turns, ...] = ()

    @property
    def prefix(self) -> tuple[int, ...]:
        return self.rows[0][: self.prefix_len]

    @classmethod
    def of(
        cls,
        rows: Iterable[Sequence[int]],
        prefix: Sequence[int] = (),
        chats: Iterable[Turns] = (),
    ) -> TokenBatch:
        """A batch whose shared prefix is the longest common token prefix of ``prefix`` and
        every row (so a tokenizer that merges tokens across the boundary costs one token,
        never exactness)."""
        kept = tuple(tuple(row) for row in rows)
        turns = tuple(tuple(chat) for chat in chats)
        if turns and len(turns) != len(kept):
            raise ValueError(f"{len(turns)} chats for {len(kept)} rows")
        return cls(kept, common_prefix_len(kept, prefix), turns)


def common_prefix_len(rows: Sequence[Sequence[int]], prefix: Sequence[int]) -> int:
    """How many leading tokens of ``prefix`` every row starts with, leaving each row at least
    one token of its own (the position whose logits are read)."""
    length = min(len(prefix), *(len(row) - 1 for row in rows))
    for row in rows:
        same = 0
        while same < length and row[same] == prefix[same]:
            same += 1
        length = same
    return max(length, 0)


def length_groups(lengths: Sequence[int], slack: float = 0.25) -> list[np.ndarray]:
    """Indices of rows grouped for padded batches: sorted by length (stable, so equal lengths
    keep their order), a new group starting where padding the group to its longest row would
    cost more than ``slack`` of its real tokens. Each group is one forward pass; a pass costs
    what its padded tokens cost, so sorting spares the padding a mixed batch pays."""
    sizes = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(sizes, kind="stable")
    groups: list[np.ndarray] = []
    start, real = 0, 0
    for i, index in enumerate(order.tolist()):
        real += int(sizes[index])
        if i > start and (i - start + 1) * int(sizes[index]) > (1.0 + slack) * real:
            groups.append(order[start:i])
            start, real = i, int(sizes[index])
    if len(order):
        groups.append(order[start:])
    return groups


@dataclass(frozen=True)
class NextTokenScores:
    """The next token after each row, read for a few chosen token ids.

    ``logprobs[p, k]``: fp32 log-probability (normalised over the full vocabulary) of chosen
    token ``k`` after row ``p`` (a float32 array; callers widen it); ``-inf`` where the
    backend could not return it (``missing`` counts those). ``mass``: total probability of
    the chosen tokens. ``top_is_chosen``: the most likely next token is one of them.
    ``generated_tokens``: what the backend generated to read them (1, checked by FIRST).
    ``prefix_computed``: the shared prefix was computed for this call rather than reused.
    ``calls``: per row, what a remote backend reports about the request that answered it
    (server model name, token usage, cache hit …); empty for in-process backends.
    """

    logprobs: np.ndarray
    mass: tuple[float, ...]
    top_is_chosen: tuple[bool, ...]
    generated_tokens: tuple[int, ...]
    missing: tuple[int, ...]
    prefix_computed: bool = False
    calls: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    """Decoding settings: greedy at ``temperature`` 0, else sampling seeded by ``seed``;
    ``stop_ids`` end a row unless ``ignore_stop`` (then every row runs to the cap)."""

    max_new_tokens: int
    stop_ids: frozenset[int]
    temperature: float = 0.0
    seed: int | None = None
    ignore_stop: bool = False


@dataclass(frozen=True)
class Generation:
    """Generated token ids per row (stop token included when one ended the row), the answer
    text (stop token excluded, special tokens skipped), and whether a stop token ended it."""

    tokens: tuple[tuple[int, ...], ...]
    texts: tuple[str, ...]
    stopped: tuple[bool, ...]
    decode_steps: int  # batched forward passes after the prefill (0 where not known)
    prefix_computed: bool = False
    calls: tuple[Mapping[str, Any], ...] = ()  # per row, as in NextTokenScores


@dataclass(frozen=True)
class MaskedRequest:
    """One forward pass over ``tokens`` [P, T] on top of a computed prefix, with explicit
    ``positions`` [P, T] and ``allowed`` [P, T, S+T] (True where a query token may attend to
    a key: the S prefix tokens, then the T row tokens). ``targets`` (rows, columns): read the
    log-probability of the token at each (row, column) from the position before it; that token
    is ``target_tokens`` where given, else ``tokens[row, column]`` (a given target may lie one
    column past the row's last token run: a segment's last token, which nothing reads, need
    not be computed)."""

    tokens: np.ndarray
    positions: np.ndarray
    allowed: np.ndarray  # bool [P, T, S+T]; a backend converts it to its own mask
    target_rows: np.ndarray
    target_columns: np.ndarray
    target_tokens: np.ndarray | None = None


@dataclass(frozen=True)
class QueryAttention:
    """What the query tokens appended to each prefix pay to the prefix's tokens.

    ``weights[p, q, i, h, s]``: attention of query ``q``'s tokens (averaged over them) after
    prefix ``p`` to prefix token ``s``, in head ``h`` of the ``i``-th requested layer
    (fp32). ``layers_run``: decoder layers computed (the pass stops after the deepest
    requested one). ``forward_passes``: model calls made (prefixes, then all queries at once).
    ``peak_weight_bytes``: the largest attention-weight tensor materialised at once;
    ``full_weight_bytes``: what ``output_attentions`` would hold instead (every layer's full
    [L, L] weights of one plain pass per prefix and query).
    """

    weights: np.ndarray
    layers_run: int
    forward_passes: int
    peak_weight_bytes: int
    full_weight_bytes: int


class Backend(ABC):
    """A loaded model behind the operations methods use. Subclasses implement the methods of
    the capabilities they declare; the rest raise :class:`HarnessError` via :meth:`lacks`."""

    name: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]
    engine_params: ClassVar[type]  # the typed engine settings a preset may set
    # Reranker calls the runner may make at once (threads); >1 only for backends that wait on
    # a remote server and are safe to call from several threads.
    parallel_calls: int = 1
    prefix_sharing: bool = False  # causal rows of a call run each distinct prefix once
    remote: ClassVar[bool] = False  # sends requests to a server (dry runs count them)
    # The prompt goes to a server as chat messages and the server applies its chat template:
    # a method cannot open (prime) the answer, and its answer tokens are read at the start
    # of the reply.
    takes_messages: bool = False

    @classmethod
    def open(cls, model: ModelParams, engine: Any, context: RunContext, purpose: str) -> Backend:
        """Load the model (the expensive step; ``purpose`` names the feature in errors)."""
        raise NotImplementedError(f"backend {cls.name!r} cannot be opened from a preset")

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Model identity for provenance (name, revision, dtype …)."""

    @property
    def tokenizer(self) -> Any:
        raise self.lacks(Capability.TOKENIZER)

    @property
    def max_positions(self) -> int | None:
        """Positions a prompt plus its answer may use, where the backend knows it."""
        return None

    def stop_token_ids(self) -> frozenset[int]:
        """End-of-sequence and end-of-turn tokens of the model."""
        raise self.lacks(Capability.GENERATE)

    def next_token_logprobs(self, batch: TokenBatch, token_ids: Sequence[int]) -> NextTokenScores:
        raise self.lacks(Capability.NEXT_TOKEN_LOGPROBS)

    def generate(self, batch: TokenBatch, request: GenerationRequest) -> Generation:
        raise self.lacks(Capability.GENERATE)

    def prefix(self, token_ids: Sequence[int]) -> Any:
        """Compute a prefix once (causal, positions 0..S-1) for :meth:`masked_logprobs`."""
        raise self.lacks(Capability.MASKED_FORWARD)

    def masked_logprobs(self, prefix: Any, request: MaskedRequest) -> np.ndarray:
        """fp32 log-probabilities (as float64) of the requested target tokens."""
        raise self.lacks(Capability.MASKED_FORWARD)

    def causal_logprobs(
        self,
        prefix: Any,
        start: int,
        tokens: np.ndarray,
        target_rows: np.ndarray,
        target_columns: np.ndarray,
        rows_per_pass: int | None = None,
    ) -> np.ndarray:
        """log-probabilities of the target tokens of rows ``tokens`` [P, T] read causally at
        positions ``start..`` after the computed ``prefix`` (of ``start`` tokens): masked
        passes of ``rows_per_pass`` rows (all: None) under the causal pattern. A backend may
        compute shared row prefixes once."""
        p, length = tokens.shape
        step = rows_per_pass or p
        if step < p:  # targets come row-major (np.nonzero), so the chunks' concatenate
            return np.concatenate(
                [
                    self.causal_logprobs(
                        prefix,
                        start,
                        tokens[at : at + step],
                        target_rows[chosen] - at,
                        target_columns[chosen],
                    )
                    for at in range(0, p, step)
                    for chosen in [(target_rows >= at) & (target_rows < at + step)]
                ]
            )
        allowed = np.concatenate(
            [np.ones((length, start), dtype=bool), np.tri(length, dtype=bool)], axis=1
        )
        request = MaskedRequest(
            tokens=tokens,
            positions=np.ascontiguousarray(
                np.broadcast_to(start + np.arange(length, dtype=np.int64), (p, length))
            ),
            allowed=np.ascontiguousarray(np.broadcast_to(allowed, (p, *allowed.shape))),
            target_rows=target_rows,
            target_columns=target_columns,
        )
        return self.masked_logprobs(prefix, request)

    def add_special_tokens(self, tokens: Sequence[str]) -> tuple[int, ...]:
        """Add ``tokens`` as single special tokens (idempotent); returns their ids."""
        raise self.lacks(Capability.ADD_TOKENS)

    @property
    def attention_shape(self) -> tuple[int, int]:
        """(decoder layers, attention heads per layer) of the model."""
        raise self.lacks(Capability.QUERY_ATTENTION)

    def query_attention(
        self, prefixes: np.ndarray, queries: Sequence[Sequence[int]], layers: Sequence[int]
    ) -> QueryAttention:
        """Run each prefix of ``prefixes`` [P, S] once, then every query of ``queries`` after
        it on the prefix's KV cache, reading the query tokens' attention to the prefix in
        ``layers`` only (see :class:`QueryAttention`)."""
        raise self.lacks(Capability.QUERY_ATTENTION)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the engine; called once when a run ends."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Ask work in flight in other threads to end soon (Ctrl-C, SIGTERM, a failed call)."""

    def lacks(self, capability: Capability) -> HarnessError:
        return HarnessError(f"backend {self.name!r} does not provide {capability.value}")


def eos_token_ids(tokenizer: Any, generation_config: Any = None) -> frozenset[int]:
    """The tokenizer's EOS plus any EOS the model's generation config names (end of turn)."""
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    if not ids:
        raise HarnessError("the model's tokenizer names no end-of-sequence token to stop at")
    return frozenset(ids)


def check_capabilities(
    method: str,
    requires: Iterable[Capability],
    backend: str,
    provides: frozenset[Capability],
    alternatives: Mapping[str, frozenset[Capability]] | None = None,
) -> None:
    """One-line error when ``backend`` lacks something ``method`` requires, suggesting the
    backends (of ``alternatives``) that have it all."""
    needed = frozenset(requires)
    missing = sorted(c.value for c in needed - provides)
    if not missing:
        return
    others = [name for name, caps in (alternatives or {}).items() if needed <= caps]
    hint = f"; use backend: {' or '.join(others)}" if others else ""
    raise HarnessError(
        f"reranker {method!r} needs {', '.join(missing)}, which backend {backend!r} does not "
        f"provide{hint}"
    )
