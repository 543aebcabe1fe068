"""Sliding-window orchestration shared by the generative listwise rerankers.

:class:`ListwiseReranker` runs the window plan (``windows.py``) over a batch of orders of one
candidate set: at each window step it renders one numbered prompt per order, hands all of
them to the method in one batch (:meth:`ListwiseReranker.rank_windows`), and reorders each
order's window by the permutation that came back. The method (RankGPT-style generation or
FIRST's single-token log-probs) lives in a subclass; the model behind it is a backend.

A sliding-window reranker makes several model calls per order, so each order's
:class:`CallFacts` aggregates its windows: ``prompt_tokens``, ``generated_tokens`` and
``forward_passes`` are sums over windows; ``parse_status`` is the most severe status of any
window (``ok`` < ``missing`` < ``repetition`` < ``wrong_format``), so the run summary's parse
status rate is the share of orders with at least one such window; ``extra`` keeps the count
per status (``parse_status_counts``) and a small record per window.

**Window memo** (:attr:`ListwiseReranker.memo_windows`, RankGPT's greedy decoding): two
orders whose windows so far left the same list state show the identical next window prompt,
and a deterministic method answers it identically, so within one call each distinct window
prompt (keyed by its exact text and turns) is computed once and its answer reused by every
other order that shows it, at any step. A reused window costs nothing: the order's token and
pass counts (and its ``http`` records) hold only the windows it computed; ``reused_windows``
counts the others, and their records say ``reused``. The memo lives for one call only.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from harness.backends.base import Backend, TokenBatch
from harness.data.model import CandidateSet
from harness.errors import HarnessError
from harness.rerankers.base import CallFacts, ParseStatus, RerankOutput, RunContext
from harness.rerankers.llm import BackendReranker
from harness.rerankers.params import ListwiseParams
from harness.rerankers.prompts.listwise import (
    ChatPrompt,
    NumberedTemplate,
    identifiers,
    prompt_token_ids,
)
from harness.rerankers.prompts.permutation_parser import worst_status
from harness.rerankers.prompts.templates import choose_templates
from harness.rerankers.windows import window_plan
from harness.usage import HttpUsage, Usage
from harness.validity import invalid_facts


@dataclass(frozen=True)
class WindowPrompt:
    """One window of one order, ready for a backend."""

    prompt: ChatPrompt
    doc_ids: tuple[str, ...]  # the window's candidates in shown order
    labels: tuple[str, ...]  # their identifiers, in the same order
    texts: tuple[str, ...] = ()  # their texts as the prompt shows them (answers by title)


@dataclass(frozen=True)
class WindowResult:
    """What a backend made of one window: a permutation of its positions, best first;
    ``http``: the server request that answered it (none on a local backend), whose record
    ``detail`` keeps under ``http``."""

    permutation: tuple[int, ...]
    status: ParseStatus
    prompt_tokens: int
    generated_tokens: int
    forward_passes: int
    detail: Mapping[str, Any] = field(default_factory=dict)
    http: HttpUsage = field(default_factory=HttpUsage)

    @property
    def usage(self) -> Usage:
        return Usage(self.forward_passes, self.prompt_tokens, self.generated_tokens, self.http)


@dataclass
class _OrderTally:
    """Per-order running totals over the windows of one call."""

    statuses: list[ParseStatus] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    details: list[Mapping[str, Any]] = field(default_factory=list)

    reused: int = 0

    def add(self, result: WindowResult) -> None:
        self.statuses.append(result.status)
        self.usage += result.usage
        self.details.append(result.detail)

    def add_reused(self, result: WindowResult) -> None:
        """A window another order of the call computed: its answer, none of its cost (its
        request record stays with the order that sent it; an invalid answer still marks this
        order invalid)."""
        self.statuses.append(result.status)
        detail = {k: v for k, v in result.detail.items() if k != "http"}
        invalid = dict(result.detail.get("http") or {}).get("invalid")
        self.details.append({**detail, **({"invalid": invalid} if invalid else {}), "reused": True})
        self.reused += 1


class ListwiseReranker(BackendReranker):
    """Base of RankGPT-style and FIRST rerankers: numbered prompts over sliding windows, on
    any backend with a tokenizer (its chat template renders the prompts). Params:
    :class:`~harness.rerankers.params.ListwiseParams` or a subclass."""

    identifier_style: str = "numeric"
    prime: ClassVar[str] = ""  # text that opens the assistant turn
    params: ListwiseParams

    @property
    def memo_windows(self) -> bool:
        """Whether a window prompt already answered in this call reuses that answer (see the
        module's docstring); only a method whose answer depends on the prompt alone says yes."""
        return False

    def __init__(
        self, name: str, context: RunContext, backend: Backend, params: Any = None
    ) -> None:
        super().__init__(name, context, backend, params)
        self.templates = choose_templates(self.params.template_kind, self.params.prompt_template)

    @property
    def tokenizer(self) -> Any:
        """The tokenizer whose chat template renders the prompts."""
        return self.backend.tokenizer

    @abstractmethod
    def rank_windows(self, windows: Sequence[WindowPrompt]) -> list[WindowResult]:
        """Rank a batch of windows (one per order, same step); one result per window."""

    def encode(self, windows: Sequence[WindowPrompt]) -> TokenBatch:
        """The windows' prompts as token ids, with their shared prefix (chat opening, system
        message, head) marked for the backend to reuse."""
        prompts = [w.prompt for w in windows]
        rows = [prompt_token_ids(self.tokenizer, p.text) for p in prompts]
        prefix = prompt_token_ids(self.tokenizer, prompts[0].prefix) if prompts[0].prefix else []
        return TokenBatch.of(rows, prefix, [p.turns for p in prompts])

    @property
    def answer_prime(self) -> str:
        """The text that opens the answer: the method's ``prime``, or none where the prompt is
        sent as chat messages (a chat request cannot open the assistant turn, so the answer is
        read from its first token)."""
        return "" if self.backend.takes_messages else self.prime

    def check_fits(self, batch: TokenBatch, new_tokens: int) -> None:
        """Fail clearly when a prompt plus its answer would run past the model's positions."""
        limit = self.backend.max_positions
        needed = max(len(r) for r in batch.rows) + new_tokens
        if limit is not None and needed > limit:
            raise HarnessError(
                f"a window prompt needs {needed} positions but model "
                f"{self.backend.identity().get('name')!r} has {limit}; lower window_size or set "
                "max_candidate_words"
            )

    def identity(self) -> dict[str, Any]:
        return {
            **super().identity(),
            "prompt_sha256": self.prompt_hashes(self.templates.hashes()),
            "identifiers": self.identifier_style,
            "prime": self.answer_prime,
            "window_size": self.params.window_size,
            "stride": self.params.stride,
            "max_candidate_words": self.params.max_candidate_words,
            "max_history": self.params.max_history,
        }

    def _rerank_batch(self, candidate_set: CandidateSet, orders: np.ndarray) -> list[RerankOutput]:
        started = time.perf_counter()
        template = self.templates.for_query(candidate_set.query)
        texts, cut = self._candidate_texts(candidate_set, template)
        ids = candidate_set.doc_ids
        current = np.array(orders, dtype=np.int64, copy=True)
        tallies = [_OrderTally() for _ in range(len(orders))]
        plan = window_plan(len(candidate_set), self.params.window_size, self.params.stride)
        memo: dict[tuple[str, Any], WindowResult] = {}  # this call's answered windows
        for window in plan:
            span = slice(window.start, window.end)
            labels = identifiers(self.identifier_style, window.size)
            prompts = []
            for row in current:
                shown = row[span]
                prompt = template.prompt(
                    self.tokenizer,
                    candidate_set.query,
                    [texts[i] for i in shown],
                    labels,
                    max_history=self.params.max_history,
                    prime=self.answer_prime,
                )
                prompts.append(
                    WindowPrompt(
                        prompt,
                        tuple(ids[i] for i in shown),
                        labels,
                        tuple(texts[i] for i in shown),
                    )
                )
            for row, tally, (result, reused) in zip(
                current, tallies, self._answer(prompts, memo), strict=True
            ):
                if sorted(result.permutation) != list(range(window.size)):
                    raise RuntimeError(f"{self.method}: window result is not a permutation")
                row[span] = row[span][list(result.permutation)]
                if reused:
                    tally.add_reused(result)
                else:
                    tally.add(result)
        call_ms = (time.perf_counter() - started) * 1000.0
        return [
            RerankOutput(
                ranking=tuple(ids[i] for i in row),
                facts=self._facts(tally, call_ms, len(orders), len(plan), cut),
            )
            for row, tally in zip(current, tallies, strict=True)
        ]

    def _answer(
        self, prompts: list[WindowPrompt], memo: dict[tuple[str, Any], WindowResult]
    ) -> list[tuple[WindowResult, bool]]:
        """Each window's result and whether it was reused: without the memo every window is
        computed; with it, only the first window of each prompt not yet in ``memo``."""
        if not self.memo_windows:
            return [(r, False) for r in self._computed(prompts)]
        keys = [(p.prompt.text, p.prompt.turns) for p in prompts]
        first = {k: i for i, k in reversed(list(enumerate(keys))) if k not in memo}
        todo = sorted(first.values())
        computed = self._computed([prompts[i] for i in todo])
        memo.update(zip((keys[i] for i in todo), computed, strict=True))
        return [(memo[k], first.get(k) != i) for i, k in enumerate(keys)]

    def _computed(self, prompts: list[WindowPrompt]) -> list[WindowResult]:
        if not prompts:
            return []
        results = self.rank_windows(prompts)
        if len(results) != len(prompts):
            raise RuntimeError(f"{self.method}: {len(results)} results for {len(prompts)} windows")
        return results

    def _candidate_texts(
        self, candidate_set: CandidateSet, template: NumberedTemplate
    ) -> tuple[list[str], int]:
        lines = [
            template.candidate_text(c, self.params.max_candidate_words)
            for c in candidate_set.candidates
        ]
        return [text for text, _ in lines], sum(cut for _, cut in lines)

    def _facts(
        self, tally: _OrderTally, call_ms: float, batch: int, windows: int, cut: int
    ) -> CallFacts:
        extra: dict[str, Any] = {
            "windows": windows,
            "window_size": self.params.window_size,
            "stride": self.params.stride,
            "parse_status_counts": dict(sorted(Counter(tally.statuses).items())),
            "window_details": tally.details,
        }
        if self.memo_windows:
            extra["reused_windows"] = tally.reused
        if cut:
            extra["truncated_candidates"] = cut
        # a server's answer says it is invalid in its call record, a local read in the window's
        extra |= invalid_facts([d.get("http", d) for d in tally.details])
        return CallFacts(
            latency_ms=call_ms / batch,
            call_latency_ms=call_ms,
            batch_size=batch,
            prompt_tokens=tally.usage.prompt_tokens,
            generated_tokens=tally.usage.generated_tokens,
            forward_passes=tally.usage.forward_passes,
            parse_status=worst_status(tally.statuses),
            extra=extra,
            http=tally.usage.http,
        )


def rank_by_scores(scores: Sequence[float], doc_ids: Sequence[str]) -> tuple[int, ...]:
    """Window positions sorted by score, highest first; ties broken by doc id so that the
    shown order cannot decide them."""
    if any(s != s for s in scores):
        raise ValueError("scores contain NaN")
    keyed = sorted(range(len(scores)), key=lambda i: (-scores[i], doc_ids[i]))
    return tuple(keyed)
