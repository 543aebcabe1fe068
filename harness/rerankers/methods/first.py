"""FIRST: listwise ranking from the log-probabilities of ONE generated token, on any backend.

The window prompt is the same numbered listwise prompt as RankGPT's, with single-token
identifiers (``[A]``, ``[B]`` … by default) and the assistant turn primed with ``[``, so the
very next token the model would write is the identifier of the candidate it ranks first.
One forward pass per window reads the next-token log-probabilities; the window's candidates
are sorted by those of their identifier tokens (ties broken by doc id). On vLLM that is one
generated token with the identifiers' log-probs (missing ones, where only the top-k could be
returned, are ``-inf`` and counted per window).

Two guards against the failure the field has shipped — FIRST silently turning into full
generation, or reading logits of a token that is not the identifier:

* at start-up every identifier must encode to exactly one token right after the primed
  context, else a :class:`HarnessError` suggests the other identifier style;
* each window records how many tokens it generated, and anything but 1 is an error.

Parse status per window: ``ok`` when the most likely next token over the whole vocabulary is
one of the window's identifiers (a generating model would have started its answer in
format), ``wrong_format`` when it is not — the ranking is then read from a distribution the
model does not favour. ``identifier_mass`` (the probability of all identifiers together) is
kept per window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from harness.backends.base import Backend, Capability, NextTokenScores
from harness.data.model import CandidateSet
from harness.errors import HarnessError
from harness.rerankers.base import RerankOutput, RunContext
from harness.rerankers.methods.listwise import (
    ListwiseReranker,
    WindowPrompt,
    WindowResult,
    rank_by_scores,
)
from harness.rerankers.params import CapCalParams, FirstParams
from harness.rerankers.prompts.listwise import (
    generation_context,
    identifiers,
    prompt_token_ids,
)
from harness.usage import NO_REQUESTS, HttpUsage, Usage
from harness.validity import INVALID_ANSWER, INVALID_ANSWERS, invalid_facts

PRIME = "["


def identifier_token_ids(
    tokenizer: Any, labels: Sequence[str], prime: str = PRIME, model_name: str = "the model"
) -> tuple[int, ...]:
    """The token id of each identifier as the model would write it after the primed context.

    Checked in context, not alone: in many tokenizers ``A`` alone is ``▁A`` (with a space
    marker) while after ``[`` it is a different token.
    """
    context = generation_context(tokenizer, prime)
    base = prompt_token_ids(tokenizer, context)
    ids = []
    for label in labels:
        encoded = prompt_token_ids(tokenizer, context + label)
        if len(encoded) != len(base) + 1 or encoded[: len(base)] != base:
            shared = next(
                (i for i, (a, b) in enumerate(zip(encoded, base, strict=False)) if a != b),
                min(len(encoded), len(base)),
            )
            pieces = encoded[shared:]
            other = "alpha" if label.isdigit() else "numeric (with window_size <= 9)"
            where = f"after {prime!r}" if prime else "at the start of the reply"
            raise HarnessError(
                f"FIRST reads one token per identifier, but {where} the identifier "
                f"{label!r} is not exactly one token for {model_name} (it encodes as "
                f"{[tokenizer.decode([t]) for t in pieces]}); use identifiers: {other}, or a "
                "smaller window_size"
            )
        ids.append(encoded[-1])
    if len(set(ids)) != len(ids):
        raise HarnessError(f"two FIRST identifiers share a token for {model_name}: {labels}")
    return tuple(ids)


def first_result(
    scores: Sequence[float],
    doc_ids: Sequence[str],
    *,
    generated_tokens: int,
    top_is_identifier: bool,
    identifier_mass: float,
    prompt_tokens: int,
    detail: dict[str, Any] | None = None,
    http: HttpUsage = NO_REQUESTS,
) -> WindowResult:
    """One window's result from its identifier scores; refuses anything but one generated
    token, the property that makes this FIRST rather than generation."""
    if generated_tokens != 1:
        raise HarnessError(
            f"FIRST must generate exactly 1 token per window, this window generated "
            f"{generated_tokens}: the backend fell back to generation"
        )
    return WindowResult(
        permutation=rank_by_scores(scores, doc_ids),
        status="ok" if top_is_identifier else "wrong_format",
        prompt_tokens=prompt_tokens,
        generated_tokens=1,
        forward_passes=1,
        detail={"identifier_mass": round(identifier_mass, 6), **(detail or {})},
        http=http,
    )


class FirstReranker(ListwiseReranker):
    """FIRST on any backend with next-token log-probs: one forward pass (or one generated
    token) per window, ranked by the log-probabilities of the identifier tokens.

    Params: :class:`~harness.rerankers.params.FirstParams`.
    """

    method = "first"
    prime = PRIME
    requires = frozenset({Capability.TOKENIZER, Capability.NEXT_TOKEN_LOGPROBS})
    params_type = FirstParams
    params: FirstParams

    def __init__(
        self, name: str, context: RunContext, backend: Backend, params: FirstParams | None = None
    ) -> None:
        super().__init__(name, context, backend, params)
        self.identifier_ids = identifier_token_ids(
            self.tokenizer,
            identifier_labels(self.identifier_style, self.params.window_size),
            prime=self.answer_prime,
            model_name=f"model {backend.identity().get('name')!r}",
        )

    @property
    def identifier_style(self) -> str:  # type: ignore[override]
        return self.params.identifiers

    def identity(self) -> dict[str, Any]:
        return {
            **super().identity(),
            "identifier_token_ids": list(self.identifier_ids),
            "prefix_sharing": self.backend.prefix_sharing,  # windows' shared prefixes run once
            "score": (
                f"next-token log-prob of each identifier after the primed {self.prime!r}"
                if self.answer_prime
                else "log-prob of each identifier as the first token of the reply"
            ),
        }

    def window_scores(self, logprobs: list[float], window: WindowPrompt) -> list[float]:
        """The scores a window is ranked by: FIRST's are the identifiers' log-probs."""
        return logprobs

    def rank_windows(self, windows: Sequence[WindowPrompt]) -> list[WindowResult]:
        batch = self.encode(windows)
        self.check_fits(batch, 1)
        ids = self.identifier_ids[: len(windows[0].labels)]
        read = self.backend.next_token_logprobs(batch, ids)
        calls = read.calls or tuple({} for _ in windows)
        results = []
        for scores, window, top, mass, generated, missing, row, call in zip(
            read.logprobs.astype(np.float64).tolist(),
            windows,
            read.top_is_chosen,
            read.mass,
            read.generated_tokens,
            read.missing,
            batch.rows,
            calls,
            strict=True,
        ):
            problem = unreadable(scores, call)
            detail: dict[str, Any] = {"http": dict(call)} if call else {}
            if problem is not None:  # ranked by the fallback (ties by doc id), counted invalid
                scores = [-math.inf] * len(scores)
                detail |= {} if call else {"invalid": problem}
            elif missing:
                detail["missing_identifier_logprobs"] = missing
            results.append(
                first_result(
                    scores if problem else self.window_scores(scores, window),
                    window.doc_ids,
                    generated_tokens=generated,
                    top_is_identifier=top,
                    identifier_mass=mass,
                    prompt_tokens=len(row),
                    detail=detail,
                    http=HttpUsage.of_record(call) if call else HttpUsage(),
                )
            )
        return results


def unreadable(logprobs: Sequence[float], call: Mapping[str, Any]) -> str | None:
    """Why a window's read cannot rank it (None: it can): a server's answer stayed invalid
    (its call says why), or a local model's identifier log-probs are NaN (overflowed logits),
    which no order can be read from (:mod:`harness.validity`)."""
    if call.get("invalid"):
        return str(call["invalid"])
    if any(v != v for v in logprobs):
        return "the identifiers' log-probs are NaN (the model's logits overflowed)"
    return None


def identifier_labels(style: str, window_size: int) -> tuple[str, ...]:
    """The identifiers of the largest window, for the start-up single-token check."""
    try:
        return identifiers(style, window_size)
    except HarnessError as exc:
        raise HarnessError(f"FIRST: {exc}") from exc


class CapCalFirstReranker(FirstReranker):
    """FIRST with content-free calibration (CapCal, arXiv 2604.10150): each window's
    identifier probabilities ``P(d|x)`` (renormalised over the window's identifiers) are
    corrected by the distribution the model gives when every passage body is replaced by a
    placeholder, ``S(d) = P(d|x) - alpha (P(d|x_empty) - 1/|C|)``, and the window is ranked by
    ``S``. The content-free prompt keeps the query and the identifiers, so it does not depend
    on the shown order: it is computed once per query and window size. Each such pass is
    counted in the cost of the call that made it: the first output of that call adds its
    forward pass, prompt tokens and generated token to its own (``forward_passes``,
    ``prompt_tokens``, ``generated_tokens``) and says how many it made in
    ``extra["calibration_forward_passes"]`` (a remote backend's request in
    ``extra["calibration_details"]``), so a set's orders sum to every pass the method made.

    Params: :class:`~harness.rerankers.params.CapCalParams` (``alpha``, ``placeholder``).
    """

    method = "first-capcal"

    @property
    def parallel_calls(self) -> int:
        """One call at a time: the content-free prior is kept per query on the instance, so
        calls of two queries in parallel threads would mix their priors."""
        return 1

    params_type = CapCalParams
    params: CapCalParams

    def __init__(
        self, name: str, context: RunContext, backend: Backend, params: CapCalParams | None = None
    ) -> None:
        super().__init__(name, context, backend, params)
        self._priors: dict[tuple[str, int], np.ndarray] = {}
        self._query: CandidateSet | None = None
        self._calibration = _CalibrationCost()

    def identity(self) -> dict[str, Any]:
        return {
            **super().identity(),
            "score": "CapCal: P(d|x) - alpha (P(d|x_empty) - 1/|C|), P renormalised over the "
            "window's identifiers",
            "alpha": self.params.alpha,
            "placeholder": self.params.placeholder,
        }

    def _rerank_batch(self, candidate_set: CandidateSet, orders: np.ndarray) -> list[RerankOutput]:
        if self._query is None or self._query.query_id != candidate_set.query_id:
            self._priors.clear()
        self._query, self._calibration = candidate_set, _CalibrationCost()
        outputs = super()._rerank_batch(candidate_set, orders)
        return self._calibration.charged_to(outputs)

    def content_free_prior(self, size: int) -> np.ndarray:
        """``P(d|x_empty)`` over the identifiers of a window of ``size``, for the current query."""
        assert self._query is not None
        key = (self._query.query_id, size)
        if key in self._calibration.unkept:
            return self._calibration.unkept[key]
        if key not in self._priors:
            query = self._query.query
            template = self.templates.for_query(query)
            labels = identifiers(self.identifier_style, size)
            prompt = template.prompt(
                self.tokenizer,
                query,
                [self.params.placeholder] * size,
                labels,
                max_history=self.params.max_history,
                prime=self.answer_prime,
            )
            batch = self.encode([WindowPrompt(prompt, ("",) * size, labels)])
            read = self.backend.next_token_logprobs(batch, self.identifier_ids[:size])
            self._calibration.add(read, prompt_tokens=len(batch.rows[0]))
            prior = _renormalised(read.logprobs[0])
            if any(call.get("invalid") for call in read.calls):
                # kept for this call only: its orders are invalid, the next call asks again
                self._calibration.unkept[key] = prior
                return prior
            self._priors[key] = prior
        return self._priors[key]

    def window_scores(self, logprobs: list[float], window: WindowPrompt) -> list[float]:
        size = len(window.labels)
        prior = self.content_free_prior(size)
        scores = _renormalised(np.asarray(logprobs)) - self.params.alpha * (prior - 1.0 / size)
        return scores.tolist()


@dataclass
class _CalibrationCost:
    """The content-free passes one CapCal call made (none when its priors were cached)."""

    usage: Usage = field(default_factory=Usage)
    details: list[dict[str, Any]] = field(default_factory=list)
    unkept: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)  # invalid priors

    def add(self, read: NextTokenScores, *, prompt_tokens: int) -> None:
        generated = int(sum(read.generated_tokens))
        self.usage += Usage(1, prompt_tokens, generated, HttpUsage.of_calls(read.calls))
        self.details.extend({"http": dict(call)} for call in read.calls if call)

    def charged_to(self, outputs: list[RerankOutput]) -> list[RerankOutput]:
        """``outputs`` with these passes added to the first one's cost (every pass of the
        call is then counted once, as a listwise call's windows are)."""
        if not self.usage.forward_passes:
            return outputs
        # an invalid content-free answer miscalibrates every window of the call: each order
        # of it is invalid (harness.validity), as a pointwise set's are
        invalid = invalid_facts([d["http"] for d in self.details])
        if invalid:
            outputs = [
                replace(o, facts=replace(o.facts, extra={**o.facts.extra, **_more(o, invalid)}))
                for o in outputs
            ]
        facts = outputs[0].facts
        extra = {**facts.extra, "calibration_forward_passes": self.usage.forward_passes}
        if self.details:
            extra["calibration_details"] = self.details
        charged = facts.plus(self.usage, extra=extra)
        return [replace(outputs[0], facts=charged), *outputs[1:]]


def _more(output: RerankOutput, invalid: Mapping[str, Any]) -> dict[str, Any]:
    """``invalid``'s count added to the output's own (its windows' invalid answers)."""
    own = output.facts.extra
    return {
        INVALID_ANSWERS: int(own.get(INVALID_ANSWERS, 0)) + invalid[INVALID_ANSWERS],
        INVALID_ANSWER: own.get(INVALID_ANSWER, invalid[INVALID_ANSWER]),
    }


def _renormalised(logprobs: np.ndarray) -> np.ndarray:
    """Probabilities over the chosen tokens only (``-inf`` counts as zero)."""
    values = np.asarray(logprobs, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.full(len(values), 1.0 / len(values))
    shifted = np.where(finite, np.exp(values - values[finite].max()), 0.0)
    return shifted / shifted.sum()
