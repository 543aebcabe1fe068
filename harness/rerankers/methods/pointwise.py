"""Pointwise yes/no relevance with a decoder-only LM: the order-invariant LLM control.

Each candidate is judged on its own: score = log p(" yes") - log p(" no") for the token after
the prompt. The prompt is a prefix shared by every candidate of the set (instruction and query
or user history) plus a per-candidate suffix. The backend computes the prefix once per set and
reuses it for every batch of suffixes (a broadcast KV cache on transformers, prefix caching
on vLLM).

Because a candidate's score cannot depend on the others or on the order, the set is scored
once and the scores are reused for every order of that set — also across calls, for the last
set seen. Each output's ``CallFacts`` says what was computed: ``forward_passes`` and
``prompt_tokens`` count the work of the call (zero when the scores were reused), and
``extra["scores_reused"]`` says which case it was.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np

from harness.backends.base import Backend, Capability, TokenBatch, Turns, common_prefix_len
from harness.data.model import CandidateSet, UserProfile
from harness.errors import HarnessError
from harness.rerankers.base import CallFacts, RerankOutput, RunContext, ranking_from_scores
from harness.rerankers.llm import BackendReranker
from harness.rerankers.params import PointwiseParams
from harness.rerankers.prompts.base import PointwiseTemplate
from harness.rerankers.prompts.listwise import chat_prompt, prompt_token_ids
from harness.rerankers.prompts.templates import choose_templates
from harness.usage import HttpUsage
from harness.validity import INVALID_ANSWER, INVALID_ANSWERS, invalid_facts


@dataclass(frozen=True)
class SetPrompts:
    """A candidate set's pointwise prompts as token ids: one prefix, one suffix per candidate;
    ``chats``: per candidate, the prompt as one user message (for a server that applies its
    own chat template; the token ids are then the local rendering of that message)."""

    prefix: tuple[int, ...]
    suffixes: tuple[tuple[int, ...], ...]
    chats: tuple[Turns, ...] = ()


@dataclass(frozen=True)
class SetScores:
    """Scores of one set (by candidate index) and what computing them cost: on a remote
    backend ``http`` are its requests and ``record`` their stored summary
    (:func:`summarize_calls`)."""

    key: SetPrompts
    scores: np.ndarray
    forward_passes: int
    prompt_tokens: int
    http: HttpUsage = field(default_factory=HttpUsage)
    record: dict[str, Any] = field(default_factory=dict)


class PointwiseReranker(BackendReranker):
    """log p(yes) - log p(no) per candidate; one prefix pass per set, batched suffixes.

    Params: :class:`~harness.rerankers.params.PointwiseParams`.
    """

    order_invariant = True
    method = "pointwise"
    requires = frozenset({Capability.TOKENIZER, Capability.NEXT_TOKEN_LOGPROBS})
    params_type = PointwiseParams
    params: PointwiseParams

    def __init__(
        self,
        name: str,
        context: RunContext,
        backend: Backend,
        params: PointwiseParams | None = None,
    ) -> None:
        super().__init__(name, context, backend, params)
        self.templates = choose_templates("pointwise", self.params.prompt_template)
        pointwise = [cast(PointwiseTemplate, t) for t in self.templates.by_task.values()]
        self.answer_ids = {  # (choose_templates checked that each is a pointwise template)
            t.name: (self._single_token(t.yes), self._single_token(t.no)) for t in pointwise
        }
        self._last: SetScores | None = None  # the last set's scores, reused for its other orders

    def identity(self) -> dict[str, Any]:
        return {
            **super().identity(),
            "prompt_sha256": self.prompt_hashes(self.templates.hashes()),
            "score": "log p(yes) - log p(no) at the answer position"
            + (" (the first token of the reply)" if self.backend.takes_messages else ""),
            "max_history": self.params.max_history,
            # a set's scores are computed on its first order and reused for the others, so
            # per-order latency is bimodal: read latency_per_set_ms for the cost
            "reuses_work_across_orders": True,
        }

    def _rerank_batch(self, candidate_set: CandidateSet, orders: np.ndarray) -> list[RerankOutput]:
        started = time.perf_counter()
        prompts = self.encode_set(candidate_set)
        last = self._last  # read once: calls may run in parallel threads (remote backends)
        reused = last is not None and last.key == prompts
        if last is None or not reused:
            last = self.score_set(prompts, self._answer_ids(candidate_set))
            self._last = last
        computed = last
        call_ms = (time.perf_counter() - started) * 1000.0
        record = computed.record
        invalid = bool(record.get(INVALID_ANSWERS))
        facts = CallFacts(
            latency_ms=call_ms / len(orders),
            call_latency_ms=call_ms,
            batch_size=len(orders),
            prompt_tokens=0 if reused else computed.prompt_tokens,
            generated_tokens=0,
            forward_passes=0 if reused else computed.forward_passes,
            extra={
                "scores_reused": reused,
                **({"http": record} if record and not reused else {}),
                # every order of the set is ranked by the same scores: all share their validity
                **({INVALID_ANSWERS: record[INVALID_ANSWERS]} if invalid else {}),
                **({INVALID_ANSWER: record[INVALID_ANSWER]} if invalid else {}),
            },
            http=HttpUsage() if reused else computed.http,
        )
        ids = candidate_set.doc_ids
        values = computed.scores.tolist()
        ranking = ranking_from_scores(ids, values)  # order-free: scores are by candidate index
        scores = dict(zip(ids, values, strict=True))
        # The call's cost (tokens, forward passes, a remote backend's requests) is counted once,
        # on its first order, so that sums over orders are the real cost whatever the batch.
        bare = replace(
            facts,
            prompt_tokens=0,
            forward_passes=0,
            extra={k: v for k, v in facts.extra.items() if k != "http"},
            http=HttpUsage(),
        )
        return [
            RerankOutput(ranking=ranking, facts=facts if i == 0 else bare, scores=scores)
            for i in range(len(orders))
        ]

    def encode_set(self, candidate_set: CandidateSet) -> SetPrompts:
        """Tokenize the shared prefix once and each candidate's suffix on its own."""
        template = self.templates.for_query(candidate_set.query)
        tokenizer = self.backend.tokenizer
        head = template.render_prefix(candidate_set.query, self.params.max_history)
        tails = [template.render_suffix(c) for c in candidate_set.candidates]
        if self.backend.takes_messages:
            prompts = chat_set_prompts(tokenizer, head, tails)
        else:
            prefix = tokenizer.encode(head, add_special_tokens=False)
            suffixes = tokenizer(tails, add_special_tokens=False)["input_ids"]
            prompts = SetPrompts(tuple(prefix), tuple(tuple(s) for s in suffixes))
        prefix, suffixes = prompts.prefix, prompts.suffixes
        limit = self.backend.max_positions
        longest = len(prefix) + max(len(s) for s in suffixes)
        if limit is not None and longest > limit:
            worst = int(np.argmax([len(s) for s in suffixes]))
            advice = (
                "set max_history in the reranker preset"
                if isinstance(candidate_set.query, UserProfile)
                else "shorten the query or that candidate's text (e.g. in the data folder)"
            )
            raise HarnessError(
                f"query {candidate_set.query_id!r}: the prompt for candidate "
                f"{candidate_set.candidates[worst].doc_id!r} needs {longest} positions but the "
                f"model has {limit}; {advice}"
            )
        return prompts

    def score_set(self, prompts: SetPrompts, answer_ids: tuple[int, int]) -> SetScores:
        """Score the suffixes in batches on the shared prefix (computed once by the backend).

        The difference of the two log-probs is taken in fp32, where the model computed them.
        """
        scores = np.zeros(len(prompts.suffixes))
        calls: list[Mapping[str, Any]] = []  # summarized as totals: their order is free
        passes, tokens = 0, len(prompts.prefix)
        per_forward = self.params.candidates_per_forward
        # Shortest suffixes first, so that a batch pads its rows to similar lengths; each
        # score is put back at its candidate's index.
        by_length = np.argsort([len(s) for s in prompts.suffixes], kind="stable")
        for begin in range(0, len(prompts.suffixes), per_forward):
            chosen = by_length[begin : begin + per_forward]
            suffixes = [prompts.suffixes[i] for i in chosen]
            rows = [prompts.prefix + suffix for suffix in suffixes]
            chats = [prompts.chats[i] for i in chosen] if prompts.chats else []
            batch = TokenBatch.of(rows, prompts.prefix, chats)
            read = self.backend.next_token_logprobs(batch, answer_ids)
            # An answer that stayed invalid (a server's) has nothing to read: its candidate
            # falls back to the bottom, and the set's orders are counted invalid.
            invalid = np.array([bool(c.get("invalid")) for c in read.calls] or [False] * len(rows))
            if any(m for m, bad in zip(read.missing, invalid, strict=True) if not bad):
                raise HarnessError(
                    f"backend {self.backend.name!r} returned no log-prob for the yes/no answer of "
                    "some candidates (only its top-k tokens); raise top_logprobs"
                )
            with np.errstate(invalid="ignore"):  # -inf - -inf of an invalid answer
                diff = (read.logprobs[:, 0] - read.logprobs[:, 1]).astype(np.float64)
            scores[chosen] = np.where(invalid, -np.inf, diff)
            passes += 1 + read.prefix_computed
            tokens += sum(len(s) for s in suffixes)
            calls.extend(read.calls)
        http = HttpUsage.of_calls(calls)
        return SetScores(prompts, scores, passes, tokens, http, summarize_calls(calls))

    def _answer_ids(self, candidate_set: CandidateSet) -> tuple[int, int]:
        return self.answer_ids[self.templates.for_query(candidate_set.query).name]

    def _answer(self, text: str) -> str:
        """An answer word as the model writes it: after the prompt (``" yes"``), or, where the
        server opens the reply itself (chat), at its start (``"yes"``)."""
        return text.lstrip() if self.backend.takes_messages else text

    def _single_token(self, answer: str) -> int:
        text = self._answer(answer)
        ids = self.backend.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise HarnessError(
                f"pointwise answer {text!r} is {len(ids)} tokens for model "
                f"{self.backend.identity().get('name')!r}; it must be exactly one"
            )
        return ids[0]


def chat_set_prompts(tokenizer: Any, head: str, tails: Sequence[str]) -> SetPrompts:
    """A set's prompts as one user message per candidate (``head`` + its tail), with the
    token ids of the local tokenizer's rendering of that message split at the longest prefix
    every row shares: what the server's template makes of it is only known to the server."""
    chats = tuple((("user", head + tail),) for tail in tails)
    rendered = [chat_prompt(tokenizer, chat, head) for chat in chats]
    rows = [prompt_token_ids(tokenizer, r.text) for r in rendered]
    shared = prompt_token_ids(tokenizer, rendered[0].prefix) if rendered[0].prefix else []
    cut = common_prefix_len(rows, shared)
    return SetPrompts(tuple(rows[0][:cut]), tuple(tuple(r[cut:]) for r in rows), chats)


def summarize_calls(calls: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The stored record of a set's requests on a remote backend: how many, how many came from
    the cache, the server's token counts (:meth:`HttpUsage.stored`), and every model name and
    fingerprint it reported."""
    if not calls:
        return {}
    summary: dict[str, Any] = {
        **HttpUsage.of_calls(calls).stored(),
        "server_models": sorted({str(c["server_model"]) for c in calls if c.get("server_model")}),
    }
    fingerprints = sorted(
        {str(c["system_fingerprint"]) for c in calls if c.get("system_fingerprint")}
    )
    if fingerprints:
        summary["system_fingerprints"] = fingerprints
    if any(c.get("dry_run") for c in calls):
        summary["dry_run"] = True
    return summary | invalid_facts(calls)
