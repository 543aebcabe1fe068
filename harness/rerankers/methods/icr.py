"""In-context reranking (ICR; Chen et al., "Attention in Large Language Models Yields
Efficient Zero-Shot Re-Rankers", arXiv 2410.02642): relevance read from attention, with no
generation.

The prompt puts every candidate after a short instruction and the query LAST::

    [chat opening] {opening}
    [1] {candidate}
    [2] {candidate} ...
    {closing}
    {query block}[chat closing]

Everything up to the separator after the last candidate is the prefix; the rest (closing
instruction, separator, query block, chat closing) are the query tokens, as in the reference
(``query_start_idx = prompt_length + separator_length``: the separator before the closing
instruction is context, not a query row; counting it made the last-shown candidate, which it
follows, lose score). Each piece is tokenised on its own, the reference's own arithmetic for
where spans and rows start. A candidate's raw score is the attention the query tokens pay to
its tokens (its ``[i]`` label and text), averaged over the query tokens and summed over
layers and heads. ICR calibrates it with a content-free query (``N/A`` in place of the query
or the user's history): per candidate token, ``c = a(query) - a(N/A)``; tokens whose ``c`` is
below ``mean - 2 std`` over the candidate's tokens are dropped (ICR's masking), and the score
is the sum of ``c`` over the kept tokens (``calibration: masked``, the default; ``plain``
sums ``c`` over all tokens, ``none`` sums ``a(query)``).

Cost: the prefix runs once per order and its KV cache serves both the real and the
calibration query, so an order costs one prefix pass plus one pass over the two short query
suffixes. The backend reads only the query rows of the layers scored
(:meth:`~harness.backends.base.Backend.query_attention`); with a head selection
(``heads`` or ``heads_file``, see :mod:`harness.rerankers.methods.heads`) only the selected heads
are
summed and the pass stops after the deepest selected layer (``truncate_depth``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.backends.base import Backend, Capability, QueryAttention
from harness.data.model import CandidateSet
from harness.errors import HarnessError
from harness.rerankers.base import CallFacts, RerankOutput, RunContext, ranking_from_scores
from harness.rerankers.llm import BackendReranker
from harness.rerankers.methods.heads import HeadSelection, parse_heads
from harness.rerankers.params import check_template
from harness.rerankers.prompts.listwise import candidate_line_text, prompt_token_ids
from harness.rerankers.prompts.templates import choose_templates

CALIBRATIONS = ("masked", "plain", "none")
MASK_STDS = 2.0  # ICR drops calibrated token scores below mean - 2 std
USER_SLOT = "\x00ICR-USER\x00"  # stands for the user message when splitting the chat template


@dataclass(frozen=True)
class IcrParams:
    """ICR: ``calibration`` (``masked``, ICR's default; ``plain``; ``none``),
    ``calibration_query`` (the content-free query, ``N/A``), ``heads`` (``"layer:head,..."``
    to score with those heads only) or ``heads_file`` (a ``harness select-heads`` artifact),
    ``truncate_depth`` (stop the pass after the deepest selected layer),
    ``max_candidate_words`` (candidate text cut to this many words), ``max_history``,
    ``prompt_template`` (an ``attention`` template by name or path; unset: the defaults)."""

    calibration: str = "masked"
    calibration_query: str = "N/A"
    heads: str | None = None
    heads_file: str | None = None
    truncate_depth: bool = True
    max_candidate_words: int | None = None
    max_history: int | None = None
    prompt_template: str | None = None

    def __post_init__(self) -> None:
        check_template(self.prompt_template, "attention")
        if self.calibration not in CALIBRATIONS:
            raise HarnessError(
                f"calibration must be one of {', '.join(CALIBRATIONS)}, got {self.calibration!r}"
            )
        if not self.calibration_query.strip():
            raise HarnessError("calibration_query must not be empty")
        if self.heads is not None and self.heads_file is not None:
            raise HarnessError("set heads or heads_file, not both")
        if self.heads is not None:
            parse_heads(self.heads)
        if self.max_candidate_words is not None and self.max_candidate_words < 1:
            raise HarnessError("max_candidate_words must be >= 1")
        if self.max_history is not None and self.max_history < 0:
            raise HarnessError(f"max_history must be >= 0, got {self.max_history}")


@dataclass(frozen=True)
class SetTokens:
    """A set's token pieces: the prefix head, the separator before each candidate and after
    the last, each position's label, each candidate's text (by candidate index), and the real
    and calibration query suffixes (their tokens are the query rows). A candidate's span is
    its label and text, as in ICR."""

    head: tuple[int, ...]
    separator: tuple[int, ...]
    labels: tuple[tuple[int, ...], ...]
    texts: tuple[tuple[int, ...], ...]
    queries: tuple[tuple[int, ...], ...]  # (real, calibration)

    def layout(self, order: Sequence[int]) -> tuple[list[int], np.ndarray]:
        """Prefix token ids for ``order`` (ending with the separator that precedes the query
        rows) and each candidate's [start, end) span, by index."""
        tokens = list(self.head)
        spans = np.zeros((len(order), 2), dtype=np.int64)
        for position, index in enumerate(order):
            tokens += self.separator
            start = len(tokens)
            tokens += self.labels[position]
            tokens += self.texts[index]
            spans[index] = (start, len(tokens))
        return tokens + list(self.separator), spans


@dataclass(frozen=True)
class IcrReading:
    """What ICR read for a batch of orders: ``attention[p, q, i, h, s]`` (q = 0 the real
    query, 1 the calibration query when computed) and each order's candidate spans."""

    attention: np.ndarray
    spans: np.ndarray  # [P, n, 2]
    layers: tuple[int, ...]
    read: QueryAttention


def token_scores(
    reading: IcrReading, order: int, heads: np.ndarray, query: int
) -> list[np.ndarray]:
    """Per candidate (by index), its tokens' attention from ``query`` summed over the
    selected ``heads`` (bool [layers read, heads])."""
    summed = reading.attention[order, query][heads].sum(axis=0)  # [S]
    return [summed[start:end] for start, end in reading.spans[order]]


def calibrated_scores(reading: IcrReading, heads: np.ndarray, calibration: str) -> np.ndarray:
    """Scores [P, n] by ICR's definition for the selected heads (see the module docstring)."""
    scores = np.zeros(reading.spans.shape[:2])
    for p in range(len(reading.spans)):
        real = token_scores(reading, p, heads, 0)
        if calibration == "none":
            scores[p] = [float(t.sum(dtype=np.float64)) for t in real]
            continue
        empty = token_scores(reading, p, heads, 1)
        for i, (r, e) in enumerate(zip(real, empty, strict=True)):
            c = r.astype(np.float64) - e.astype(np.float64)
            if calibration == "masked" and len(c) > 1:
                c = c[c > c.mean() - MASK_STDS * c.std(ddof=1)]
            scores[p, i] = c.sum()
    return scores


def head_scores(reading: IcrReading) -> np.ndarray:
    """Per-head calibrated candidate scores [P, layers read, heads, n]: the sum over each
    candidate's tokens of a(query) - a(N/A) in that head alone (head selection ranks with
    these)."""
    diff = reading.attention[:, 0].astype(np.float64) - reading.attention[:, 1]
    cumulative = np.concatenate([np.zeros((*diff.shape[:-1], 1)), diff.cumsum(-1)], axis=-1)
    p_index = np.arange(len(reading.spans))[:, None]
    starts, ends = reading.spans[..., 0], reading.spans[..., 1]  # [P, n]
    by_head = cumulative.transpose(0, 3, 1, 2)  # [P, S+1, L, H]
    return (by_head[p_index, ends] - by_head[p_index, starts]).transpose(0, 2, 3, 1)


class IcrReranker(BackendReranker):
    """ICR on a backend that reads query attention (transformers). Params: :class:`IcrParams`."""

    method = "icr"
    requires = frozenset({Capability.TOKENIZER, Capability.QUERY_ATTENTION})
    params_type = IcrParams
    params: IcrParams

    def __init__(
        self, name: str, context: RunContext, backend: Backend, params: IcrParams | None = None
    ) -> None:
        super().__init__(name, context, backend, params)
        layers, heads = backend.attention_shape
        self.selection: HeadSelection | None = None
        if self.params.heads_file is not None:
            self.selection = HeadSelection.load(self.params.heads_file)
            self.selection.check_model(backend.identity())
            pairs = self.selection.heads
        elif self.params.heads is not None:
            pairs = parse_heads(self.params.heads)
        else:
            pairs = tuple((layer, head) for layer in range(layers) for head in range(heads))
        for layer, head in pairs:
            if layer >= layers or head >= heads:
                raise HarnessError(
                    f"head {layer}:{head} is not in the model ({layers} layers of {heads} heads)"
                )
        # Truncated: read the selected layers only and stop after the deepest; otherwise run
        # and read every layer (the reference the truncated pass must equal).
        chosen = sorted({layer for layer, _ in pairs})
        self.layers = tuple(chosen) if self.params.truncate_depth else tuple(range(layers))
        self.heads = np.zeros((len(self.layers), heads), dtype=bool)
        row = {layer: i for i, layer in enumerate(self.layers)}
        for layer, head in pairs:
            self.heads[row[layer], head] = True
        self.pairs = tuple(sorted(pairs))
        self.depth = self.layers[-1] + 1
        self._chat = _chat_parts(backend.tokenizer)
        self.templates = choose_templates("attention", self.params.prompt_template)
        self._tokens: tuple[CandidateSet, SetTokens] | None = None

    def identity(self) -> dict[str, Any]:
        layers, heads = self.backend.attention_shape
        every = len(self.pairs) == layers * heads
        selection = self.selection.identity() if self.selection is not None else None
        return {
            **super().identity(),
            "prompt_sha256": self.templates.hashes(),
            "score": "attention of the query tokens to each candidate's tokens, summed over the "
            "scored heads",
            "query_rows": "closing instruction to chat closing (the separator before it is prefix)",
            "calibration": self.params.calibration,
            "calibration_query": self.params.calibration_query,
            "heads": "all" if every else [f"{layer}:{head}" for layer, head in self.pairs],
            "head_selection": selection,
            "layers_run": self.depth,
            "max_candidate_words": self.params.max_candidate_words,
            "max_history": self.params.max_history,
        }

    def check_data(self, candidate_set: CandidateSet) -> None:
        super().check_data(candidate_set)
        if self.selection is not None:
            self.selection.check_held_out(candidate_set.query_id)

    def _rerank_batch(self, candidate_set: CandidateSet, orders: np.ndarray) -> list[RerankOutput]:
        started = time.perf_counter()
        reading = self.read(candidate_set, orders)
        scores = calibrated_scores(reading, self.heads, self.params.calibration)
        call_ms = (time.perf_counter() - started) * 1000.0
        queries = self._queries(self.set_tokens(candidate_set))
        prompt = reading.attention.shape[-1] + sum(len(q) for q in queries)
        p = len(orders)
        facts = CallFacts(
            latency_ms=call_ms / p,
            call_latency_ms=call_ms,
            batch_size=p,
            prompt_tokens=int(prompt),
            generated_tokens=0,
            forward_passes=reading.read.forward_passes,
            extra={
                "layers_run": reading.read.layers_run,
                "heads_scored": int(self.heads.sum()),
                "calibration": self.params.calibration,
                "attention_bytes_per_order": reading.read.peak_weight_bytes // p,
                "full_attention_bytes_per_order": reading.read.full_weight_bytes // p,
            },
        )
        ids = candidate_set.doc_ids
        return [
            RerankOutput(
                ranking=ranking_from_scores(ids, row.tolist()),
                facts=facts,
                scores=dict(zip(ids, row.tolist(), strict=True)),
            )
            for row in scores
        ]

    def read(self, candidate_set: CandidateSet, orders: np.ndarray) -> IcrReading:
        """The attention of the real (and calibration) query for each order of ``orders``."""
        tokens = self.set_tokens(candidate_set)
        laid = [tokens.layout(row) for row in np.asarray(orders)]
        prefixes = np.array([prefix for prefix, _ in laid], dtype=np.int64)
        queries = self._queries(tokens)
        limit = self.backend.max_positions
        needed = prefixes.shape[1] + max(len(q) for q in queries)
        if limit is not None and needed > limit:
            raise HarnessError(
                f"query {candidate_set.query_id!r}: the ICR prompt needs {needed} positions but "
                f"model {self.backend.identity().get('name')!r} has {limit}; set "
                "max_candidate_words (or max_history) in the reranker preset, or lower --depth"
            )
        read = self.backend.query_attention(prefixes, queries, self.layers)
        spans = np.stack([spans for _, spans in laid])
        return IcrReading(read.weights, spans, self.layers, read)

    def _queries(self, tokens: SetTokens) -> tuple[tuple[int, ...], ...]:
        return tokens.queries[:1] if self.params.calibration == "none" else tokens.queries

    def set_tokens(self, candidate_set: CandidateSet) -> SetTokens:
        """The set's token pieces, computed once per set."""
        if self._tokens is not None and self._tokens[0] is candidate_set:
            return self._tokens[1]
        tokenizer = self.backend.tokenizer
        template = self.templates.for_query(candidate_set.query)
        opening, closing = self._chat
        sep = template.separator

        def encode(text: str) -> tuple[int, ...]:
            return tuple(tokenizer.encode(text, add_special_tokens=False))

        texts = [
            candidate_line_text(c, self.params.max_candidate_words)[0]
            for c in candidate_set.candidates
        ]
        context = template.context.render(candidate_set.query, self.params.max_history)
        queries = tuple(
            encode(f"{template.closing}{sep}{template.render_query(q)}{closing}")
            for q in (context, self.params.calibration_query)
        )
        built = SetTokens(
            head=tuple(prompt_token_ids(tokenizer, opening + template.opening)),
            separator=encode(sep),
            labels=tuple(encode(f"[{i + 1}]") for i in range(len(texts))),
            texts=tuple(encode(f" {text}") for text in texts),
            queries=queries,
        )
        self._tokens = (candidate_set, built)
        return built


def _chat_parts(tokenizer: Any) -> tuple[str, str]:
    """The chat template's text before and after the user message (with the assistant turn
    opened), or ("", "") for a model without one."""
    if not getattr(tokenizer, "chat_template", None):
        return "", ""
    messages = [{"role": "user", "content": USER_SLOT}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str) or text.count(USER_SLOT) != 1:
        raise HarnessError("the tokenizer's chat template did not render the ICR prompt")
    before, after = text.split(USER_SLOT)
    return before, after
