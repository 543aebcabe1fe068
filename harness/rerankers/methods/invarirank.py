"""InvariRank (one pass, any order) and its causal control, on a masked-forward backend.

Both rerankers read the same marker prompt — a shared span (instruction + query or user
history) followed by one ``[ITEM] … [/ITEM]`` segment per candidate — and score a candidate by
the mean fp32 log-probability of its content tokens (those strictly between ``[ITEM]`` and
``[/ITEM]``). They differ only in what each token may see and where it sits:

* ``InvariRankReranker``: an additive float mask lets every candidate token see the span and
  the earlier tokens of its own segment, never another candidate; separators see only
  themselves; there is no BOS (``[SPAN]`` starts the sequence). Every segment starts at the
  same RoPE position ``S`` (the span length), tokens that feed no score sit at 0. So a
  candidate's score equals that of its own causal pass over ``span + segment``, whatever the
  order: invariant up to float rounding.
* ``CausalListwiseReranker`` (``lft``): an ordinary causal mask and sequential positions over
  the same tokens — the ablation that shows what the mask and the positions buy. It is
  order-sensitive.

Each segment is tokenized on its own, once per candidate set; an order's prompt is the
segments gathered by the order's index row. Every order of a set has the same length, so a
batch of orders needs no padding, and positions always come from the layout.

The span sees only itself under both masks and sits at positions 0..S-1 in both, so its keys
and values are the same for every order: each call runs the span once and hands its KV cache
(broadcast over the batch) to one forward pass that scores all candidates of all its orders.
This is exact, not an approximation, and it spares the span's share of the compute per order.

InvariRank's mask allows little: on a 20-passage prompt about 4% of the (query, key) entries
a dense pass computes. ``attention: segments`` (its default) computes little else: the
``[ITEM] content`` segment of every (order, candidate) pair runs on the span's cache at
positions S.., packed a few to a row (rows of near-equal length, about the span's) under the
invariant mask, so each row carries the span's keys once and almost every entry it computes
is allowed. The score is the dense mask's up to float rounding (tests hold it to 1e-5 against
``attention: dense``, the full 4-D mask, which stays as the reference). Separators,
``[/ITEM]`` and each segment's last content token (whose output would predict ``[/ITEM]``)
feed no score and are not run. Every order's segments are computed for that order; nothing is
reused across orders, or the invariance measured would hold by construction.
Both need a backend that takes a custom mask and explicit positions (``masked_forward``:
transformers; vLLM cannot).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from harness.backends.base import Backend, Capability, MaskedRequest, length_groups
from harness.data.model import CandidateSet
from harness.errors import HarnessError
from harness.rerankers.base import CallFacts, RerankOutput, RunContext, ranking_from_scores
from harness.rerankers.llm import BackendReranker
from harness.rerankers.params import MarkerParams
from harness.rerankers.prompts.base import MARKERS
from harness.rerankers.prompts.templates import choose_templates

SEPARATOR_GROUP = -1  # group id of tokens that see only themselves (separators)


@dataclass(frozen=True)
class MarkerIds:
    """Token ids of ``[SPAN] [/SPAN] [ITEM] [/ITEM]`` in the model's tokenizer."""

    span: int
    span_end: int
    item: int
    item_end: int

    @property
    def all(self) -> frozenset[int]:
        return frozenset((self.span, self.span_end, self.item, self.item_end))


@dataclass(frozen=True)
class SetTokens:
    """One candidate set, tokenized once: the span and one block per candidate.

    A block is the separator followed by the candidate's segment ``[ITEM] content [/ITEM]``.
    Per-token arrays over all blocks (candidate-major) let any order be gathered by index.
    """

    span: np.ndarray  # [S] token ids
    tokens: np.ndarray  # [T] token ids of all blocks
    shared_positions: np.ndarray  # [T] separator 0, segment S..S+len-1
    group: np.ndarray  # [T] candidate index, or SEPARATOR_GROUP
    content: np.ndarray  # [T] True for scored content tokens
    block_start: np.ndarray  # [n]
    block_len: np.ndarray  # [n]
    content_count: np.ndarray  # [n]
    twin: np.ndarray  # [n] lowest index of a candidate with the same content tokens

    @property
    def row_length(self) -> int:
        """Tokens in the prompt of any order of this set."""
        return len(self.span) + len(self.tokens)


@dataclass(frozen=True)
class OrderRows:
    """The candidate part (after the span) of P orders' prompts, all of length T: no padding."""

    tokens: np.ndarray  # [P, T]
    shared_positions: np.ndarray  # [P, T]
    group: np.ndarray  # [P, T] SEPARATOR_GROUP or candidate index
    content: np.ndarray  # [P, T]


def build_set_tokens(
    span: Sequence[int], separator: Sequence[int], contents: Sequence[Sequence[int]], ids: MarkerIds
) -> SetTokens:
    """Lay out the span and the candidates' content tokens as gatherable blocks."""
    s = len(span)
    tokens: list[int] = []
    positions: list[int] = []
    group: list[int] = []
    content: list[bool] = []
    lengths: list[int] = []
    for index, body in enumerate(contents):
        segment = [ids.item, *body, ids.item_end]
        tokens += [*separator, *segment]
        positions += [0] * len(separator) + list(range(s, s + len(segment)))
        group += [SEPARATOR_GROUP] * len(separator) + [index] * len(segment)
        content += [False] * (len(separator) + 1) + [True] * len(body) + [False]
        lengths.append(len(separator) + len(segment))
    block_len = np.array(lengths, dtype=np.int64)
    first: dict[tuple[int, ...], int] = {}
    twin = [first.setdefault(tuple(body), index) for index, body in enumerate(contents)]
    return SetTokens(
        span=np.array(span, dtype=np.int64),
        tokens=np.array(tokens, dtype=np.int64),
        shared_positions=np.array(positions, dtype=np.int64),
        group=np.array(group, dtype=np.int64),
        content=np.array(content, dtype=bool),
        block_start=np.cumsum(block_len) - block_len,
        block_len=block_len,
        content_count=np.array([len(body) for body in contents], dtype=np.int64),
        twin=np.array(twin, dtype=np.int64),
    )


def gather_orders(set_tokens: SetTokens, orders: np.ndarray) -> OrderRows:
    """Concatenate the candidate blocks in each order's sequence, vectorised over orders."""
    p = len(orders)
    flat = np.asarray(orders, dtype=np.int64).reshape(-1)
    lengths = set_tokens.block_len[flat]
    ends = np.cumsum(lengths)
    offsets = np.arange(ends[-1]) - np.repeat(ends - lengths, lengths)
    index = (np.repeat(set_tokens.block_start[flat], lengths) + offsets).reshape(p, -1)
    return OrderRows(
        tokens=set_tokens.tokens[index],
        shared_positions=set_tokens.shared_positions[index],
        group=set_tokens.group[index],
        content=set_tokens.content[index],
    )


def invariant_allowed(group: np.ndarray, span: int) -> np.ndarray:
    """Where each token may attend, [P,T,S+T] over (cached span, candidate tokens).

    A candidate token sees the whole span and the earlier tokens of its own segment, never
    another candidate; a separator sees only itself. Every row allows its diagonal, so no
    softmax row is empty.
    """
    length = group.shape[1]
    query, key = group[:, :, None], group[:, None, :]
    causal = np.tri(length, dtype=bool)
    own_segment = ((query == key) & (query >= 0) & causal) | np.eye(length, dtype=bool)
    sees_span = np.broadcast_to((group != SEPARATOR_GROUP)[:, :, None], (*group.shape, span))
    return np.concatenate([sees_span, own_segment], axis=-1)


def causal_allowed(batch: int, span: int, length: int) -> np.ndarray:
    """The ordinary causal pattern over (cached span, candidate tokens), [P,T,S+T]."""
    allowed = np.concatenate([np.ones((length, span), dtype=bool), np.tri(length, dtype=bool)], 1)
    return np.broadcast_to(allowed, (batch, length, span + length))


def pack_segments(lengths: np.ndarray, capacity: int) -> list[np.ndarray]:
    """Segment indices packed into ``ceil(total / capacity)`` rows of near-equal totals, so
    that a pass pads little: longest first, each into the row with the fewest tokens so far
    (a segment longer than ``capacity`` ends up alone). Inside a row, shortest first."""
    total = int(np.sum(lengths))
    count = max(-(-total // max(capacity, 1)), 1) if len(lengths) else 0
    rows: list[list[int]] = [[] for _ in range(count)]
    filled = [(0, r) for r in range(count)]  # (tokens so far, row), a heap
    for index in np.argsort(-np.asarray(lengths), kind="stable").tolist():
        size, row = heapq.heappop(filled)
        rows[row].append(index)
        heapq.heappush(filled, (size + int(lengths[index]), row))
    return [np.array(row[::-1], dtype=np.int64) for row in rows if row]


def tie_twins(scores: np.ndarray, twin: np.ndarray) -> np.ndarray:
    """Give candidates with identical content tokens one score: the mean of their own.

    Their exact scores are equal by definition, but float rounding differs by ~1e-7 with the
    slot a segment occupies, which would let the shown order decide between duplicates.
    Made exactly equal, they tie and the tie breaks by candidate id.
    """
    if (twin == np.arange(len(twin))).all():
        return scores
    sums = np.zeros_like(scores)
    np.add.at(sums, (slice(None), twin), scores)  # type: ignore[arg-type]  # stubs: no tuple index
    counts = np.bincount(twin, minlength=len(twin))
    return (sums / np.maximum(counts, 1))[:, twin]


class MarkerListwiseReranker(BackendReranker):
    """Scores every candidate of an order in one forward pass over the marker prompt.

    Subclasses choose the mask and the positions (``shared_framing``). Params:
    :class:`~harness.rerankers.params.MarkerParams`; a LoRA adapter is a backend setting
    (``adapter_path``).
    """

    shared_framing: ClassVar[bool]
    requires = frozenset({Capability.TOKENIZER, Capability.MASKED_FORWARD, Capability.ADD_TOKENS})
    params_type = MarkerParams
    params: MarkerParams

    def __init__(
        self, name: str, context: RunContext, backend: Backend, params: MarkerParams | None = None
    ) -> None:
        super().__init__(name, context, backend, params)
        chosen = self.params.attention
        if chosen == "segments" and not self.shared_framing:
            raise HarnessError(
                f"{self.method}: attention 'segments' needs InvariRank's mask (every candidate "
                "sees only the span and itself); a causal prompt takes attention: dense"
            )
        self.attention = chosen or ("segments" if self.shared_framing else "dense")
        self.templates = choose_templates("marker", self.params.prompt_template)
        self.markers = MarkerIds(*backend.add_special_tokens(MARKERS))

    def identity(self) -> dict[str, Any]:
        model = self.backend.identity()
        # lft's orders may share computed prefixes (exact to rounding); InvariRank's never do
        sharing = {} if self.shared_framing else {"prefix_sharing": self.backend.prefix_sharing}
        return {
            **super().identity(),
            **sharing,
            "prompt_sha256": self.templates.hashes(),
            "mask": "invariant" if self.shared_framing else "causal",
            "positions": "shared" if self.shared_framing else "sequential",
            "score": "mean fp32 log-prob of content tokens",
            "attention": self.attention,
            "max_history": self.params.max_history,
            "max_candidate_tokens": self.params.max_candidate_tokens,
            "lora_adapter": model.pop("lora_adapter", None),
            "model": model,
        }

    def _rerank_batch(self, candidate_set: CandidateSet, orders: np.ndarray) -> list[RerankOutput]:
        started = time.perf_counter()
        set_tokens, truncated = self.encode_set(candidate_set)
        span = self.backend.prefix(set_tokens.span.tolist())
        step = max(self.context.batch_size, 1)
        if self.backend.prefix_sharing and not self.shared_framing:
            step = len(orders)  # one prefix tree over all the call's orders (lft only)
        chunks = [orders[i : i + step] for i in range(0, len(orders), step)]
        scored = [self._score(set_tokens, c, span) for c in chunks]
        scores = np.concatenate([s for s, _ in scored])
        call_ms = (time.perf_counter() - started) * 1000.0
        facts = CallFacts(
            latency_ms=call_ms / len(orders),
            call_latency_ms=call_ms,
            batch_size=len(orders),
            prompt_tokens=set_tokens.row_length,
            generated_tokens=0,
            forward_passes=1 + sum(n for _, n in scored),  # the shared span, then the rows
            extra={
                "span_tokens": len(set_tokens.span),
                "scored_tokens": int(set_tokens.content_count.sum()),
                "orders_per_pass": min(step, len(orders)),
                **truncated,
            },
        )
        ids = candidate_set.doc_ids
        outputs = []
        for row in scores:
            values = row.tolist()
            ranking = ranking_from_scores(ids, values)
            by_id = dict(zip(ids, values, strict=True))
            outputs.append(RerankOutput(ranking=ranking, facts=facts, scores=by_id))
        return outputs

    def encode_set(self, candidate_set: CandidateSet) -> tuple[SetTokens, dict[str, int]]:
        """Tokenize the span and each candidate segment on its own; check the layout fits.

        Returns the set's tokens and, when candidates were truncated, how many.
        """
        template = self.templates.for_query(candidate_set.query)
        tokenizer = self.backend.tokenizer
        span = tokenizer.encode(
            template.render_span(candidate_set.query, self.params.max_history),
            add_special_tokens=False,
        )
        self._check_segment(span, self.markers.span, self.markers.span_end, candidate_set, None)
        separator = tokenizer.encode(template.separator, add_special_tokens=False)
        items = [template.render_item(c) for c in candidate_set.candidates]
        encoded = tokenizer(items, add_special_tokens=False)["input_ids"]
        contents = []
        for ids, candidate in zip(encoded, candidate_set.candidates, strict=True):
            self._check_segment(
                ids, self.markers.item, self.markers.item_end, candidate_set, candidate.doc_id
            )
            contents.append(ids[1:-1])
        truncated = {}
        keep = self.params.max_candidate_tokens
        if keep is not None:
            cut = sum(len(body) > keep for body in contents)
            contents = [body[:keep] for body in contents]
            if cut:
                truncated = {"truncated_candidates": cut}
        set_tokens = build_set_tokens(span, separator, contents, self.markers)
        self._check_fits(set_tokens, candidate_set)
        return set_tokens, truncated

    def score_orders(
        self, set_tokens: SetTokens, orders: np.ndarray, span_cache: Any | None = None
    ) -> np.ndarray:
        """Scores [P, n] (by candidate index, not shown position) of P orders on top of the
        span's cache (computed if not given).

        The span sees only itself under both masks and sits at positions 0..S-1 in both, so
        one computed span serves every order of the set."""
        if span_cache is None:
            span_cache = self.backend.prefix(set_tokens.span.tolist())
        return self._score(set_tokens, orders, span_cache)[0]

    def _score(
        self, set_tokens: SetTokens, orders: np.ndarray, span_cache: Any
    ) -> tuple[np.ndarray, int]:
        """Scores [P, n] and the forward passes they took, by the configured route."""
        if self.attention == "segments":
            return self._score_segments(set_tokens, orders, span_cache)
        return self._score_dense(set_tokens, orders, span_cache), 1

    def _score_segments(
        self, set_tokens: SetTokens, orders: np.ndarray, span_cache: Any
    ) -> tuple[np.ndarray, int]:
        """The invariant mask's allowed work only: the ``[ITEM] content`` segments of every
        (order, candidate) pair, packed into rows on the span's cache (positions S.. each).

        A row holds segments up to ``max(S, longest segment)`` tokens, so the span's keys,
        which each row carries, cost no more than the row's own tokens, while the entries a
        segment may not see (the other segments of its row) stay few: one segment per row on
        passages, a dozen short titles after a long user history. Inside a row the mask is
        the invariant one (each segment sees the span and itself), nothing reads a separator
        or ``[/ITEM]``, so they are not run. Each order's segments are computed for that order
        (no result is shared across orders), and the dense route stays the reference that
        checks nothing order-dependent leaks in. Rows of similar length share a pass (at most
        10% padding: every padded token costs a full token's matmuls). A segment's last
        content token is read as a target but not run: its output would predict ``[/ITEM]``."""
        p, n = orders.shape
        candidate = np.asarray(orders, dtype=np.int64).reshape(-1)  # pair k: order k // n
        counts = set_tokens.content_count[candidate]
        # [ITEM] + content but its last token, whose output (predicting [/ITEM]) nothing reads
        lengths = np.maximum(counts, 1)
        starts = set_tokens.block_start + set_tokens.block_len - set_tokens.content_count - 2
        span = len(set_tokens.span)
        packed = pack_segments(lengths, max(span, int(lengths.max())))
        sums = np.zeros((p, n))
        groups = length_groups([int(lengths[row].sum()) for row in packed], slack=0.1)
        for group in groups:
            rows = [packed[i] for i in group.tolist()]
            width = max(int(lengths[row].sum()) for row in rows)
            tokens = np.full((len(rows), width), self.markers.item_end, dtype=np.int64)
            positions = np.zeros((len(rows), width), dtype=np.int64)
            owner = np.full((len(rows), width), SEPARATOR_GROUP, dtype=np.int64)
            reads: list[tuple[int, int, int]] = []  # (row, column of the [ITEM], pair)
            for r, row in enumerate(rows):
                column = 0
                for pair in row.tolist():
                    size, first = int(lengths[pair]), int(starts[candidate[pair]])
                    tokens[r, column : column + size] = set_tokens.tokens[first : first + size]
                    positions[r, column : column + size] = span + np.arange(size)
                    owner[r, column : column + size] = pair
                    reads.append((r, column, pair))
                    column += size
            # Content token j of a segment (column of its [ITEM] + 1 + j) is read from the
            # output one column before it; the last one's column is not run.
            row_of, item_column, pairs = np.array(reads, dtype=np.int64).reshape(-1, 3).T
            read = counts[pairs]
            within = np.arange(read.sum()) - np.repeat(np.cumsum(read) - read, read)
            target_rows = np.repeat(row_of, read)
            target_columns = np.repeat(item_column, read) + 1 + within
            pairs = np.repeat(pairs, read)
            target_tokens = set_tokens.tokens[starts[candidate[pairs]] + 1 + within]
            request = MaskedRequest(
                tokens=tokens,
                positions=positions,
                allowed=invariant_allowed(owner, span),
                target_rows=target_rows,
                target_columns=target_columns,
                target_tokens=target_tokens,
            )
            logprobs = self.backend.masked_logprobs(span_cache, request)
            np.add.at(sums, (pairs // n, candidate[pairs]), logprobs)
        return tie_twins(sums / set_tokens.content_count[None, :], set_tokens.twin), len(groups)

    def _score_dense(
        self, set_tokens: SetTokens, orders: np.ndarray, span_cache: Any
    ) -> np.ndarray:
        """One forward pass over the candidate tokens of all P orders under the 4-D mask
        (InvariRank's); lft's causal rows go through the backend's ``causal_logprobs``, which
        may run the orders' shared prefixes once (never InvariRank's: its invariance is
        measured, not built in)."""
        rows = gather_orders(set_tokens, orders)
        p, span = len(rows.tokens), len(set_tokens.span)
        row_index, column = np.nonzero(rows.content)
        owner = rows.group[row_index, column]
        sums = np.zeros((p, len(set_tokens.block_len)))
        if not self.shared_framing:  # causal: the backend may run shared prefixes once
            logprobs = self.backend.causal_logprobs(
                span_cache, span, rows.tokens, row_index, column, self.context.batch_size
            )
            np.add.at(sums, (row_index, owner), logprobs)
            return tie_twins(sums / set_tokens.content_count[None, :], set_tokens.twin)
        request = MaskedRequest(
            tokens=rows.tokens,
            positions=rows.shared_positions,
            allowed=invariant_allowed(rows.group, span),
            target_rows=row_index,
            target_columns=column,
        )
        logprobs = self.backend.masked_logprobs(span_cache, request)
        np.add.at(sums, (row_index, owner), logprobs)
        return tie_twins(sums / set_tokens.content_count[None, :], set_tokens.twin)

    def _check_segment(
        self,
        ids: Sequence[int],
        first: int,
        last: int,
        candidate_set: CandidateSet,
        doc_id: str | None,
    ) -> None:
        """A segment must be ``first … last`` with no marker inside (layout integrity)."""
        inner = set(ids[1:-1]) & self.markers.all
        if len(ids) < 2 or ids[0] != first or ids[-1] != last or inner:
            where = "the query" if doc_id is None else f"candidate {doc_id!r}"
            raise HarnessError(
                f"query {candidate_set.query_id!r}: {where} does not tokenize into a clean "
                "marker segment (its text may contain a special token)"
            )

    def _check_fits(self, set_tokens: SetTokens, candidate_set: CandidateSet) -> None:
        limit = self.backend.max_positions
        if limit is None:
            return
        span = len(set_tokens.span)
        if self.shared_framing:
            segments = set_tokens.content_count + 2
            worst = int(np.argmax(segments))
            needed = span + int(segments[worst])
            what = f"candidate {candidate_set.candidates[worst].doc_id!r} (span + its segment)"
        else:
            needed = set_tokens.row_length
            what = f"the prompt with all {len(candidate_set)} candidates"
        if needed > limit:
            raise HarnessError(
                f"query {candidate_set.query_id!r}: {what} needs {needed} positions but the model "
                f"has {limit}; lower --depth, or set max_history or max_candidate_tokens in the "
                "reranker preset"
            )


class InvariRankReranker(MarkerListwiseReranker):
    """InvariRank: invariant mask, shared positions — the output cannot depend on the order."""

    order_invariant = True
    shared_framing = True
    method = "invarirank"


class CausalListwiseReranker(MarkerListwiseReranker):
    """``lft``: the same prompt and score under a causal mask with sequential positions."""

    shared_framing = False
    method = "lft"
