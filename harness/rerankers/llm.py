"""Base of the rerankers written once against a model backend.

A method class declares the capabilities it ``requires`` and its typed ``params_type``; it is
constructed as ``Method(name, context, backend, params)``. The registry builds the params and
checks the capabilities from the classes alone, before the backend loads a model; the
constructor checks the capabilities again for a backend handed in directly (tests,
benchmarks).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from harness.backends.base import Backend, Capability, check_capabilities
from harness.data.model import CandidateSet, TextQuery
from harness.errors import HarnessError, shorten
from harness.rerankers.base import Reranker, RerankOutput, RunContext

CHAT_MESSAGES = "chat messages (the server applies its chat template; no primed answer)"


def chat_prompt_hash(template_hash: str) -> str:
    """A template's hash when its prompt is sent as chat messages."""
    return hashlib.sha256(f"chat-messages:{template_hash}".encode()).hexdigest()


class BackendReranker(Reranker):
    """A reranking method on a :class:`Backend`."""

    uses_device = True
    method: ClassVar[str]
    requires: ClassVar[frozenset[Capability]]
    params_type: ClassVar[type]

    def __init__(
        self, name: str, context: RunContext, backend: Backend, params: Any = None
    ) -> None:
        super().__init__(name, context)
        check_capabilities(self.method, self.requires, backend.name, backend.capabilities)
        self.backend = backend
        self._control_tokens: tuple[str, ...] | None = None
        self._checked_set: CandidateSet | None = None
        self.params = params if params is not None else self.params_type()
        if not isinstance(self.params, self.params_type):
            raise TypeError(
                f"{type(self).__name__} takes {self.params_type.__name__}, "
                f"got {type(self.params).__name__}"
            )

    def rerank(self, candidate_set: CandidateSet, orders: np.ndarray) -> list[RerankOutput]:
        self.check_data(candidate_set)
        return super().rerank(candidate_set, orders)

    def check_data(self, candidate_set: CandidateSet) -> None:
        # The runner checks every set up front and each call checks its own: the last set
        # checked is remembered, so a set's texts are scanned once, not once per batch.
        if candidate_set is self._checked_set:
            return
        if self._control_tokens is None:
            has_tokenizer = Capability.TOKENIZER in self.backend.capabilities
            self._control_tokens = control_tokens(self.backend.tokenizer) if has_tokenizer else ()
        check_plain_text(candidate_set, self._control_tokens)
        self._checked_set = candidate_set

    def identity(self) -> dict[str, Any]:
        return {
            **super().identity(),
            "method": self.method,
            "backend": self.backend.name,
            "model": self.backend.identity(),
            **({"prompt_format": CHAT_MESSAGES} if self.backend.takes_messages else {}),
        }

    def prompt_hashes(self, hashes: dict[str, str]) -> dict[str, str]:
        """The templates' hashes as the run's prompt identity: where the server applies its
        own chat template to messages, the model sees another prompt than the local
        rendering, so the hashes differ from a completions run's (gates and reports compare
        them)."""
        if not self.backend.takes_messages:
            return hashes
        return {name: chat_prompt_hash(value) for name, value in hashes.items()}

    @property
    def parallel_calls(self) -> int:
        """Calls the runner may make at once: what the backend allows (a remote server's
        ``concurrency``; 1 for in-process models)."""
        return self.backend.parallel_calls

    def close(self) -> None:
        self.backend.close()

    def stop(self) -> None:
        self.backend.stop()


def control_tokens(tokenizer: Any) -> tuple[str, ...]:
    """The tokenizer's special tokens as text (``<|im_start|>``, ``</s>``, added markers):
    strings the tokenizer turns into control tokens wherever they appear in a prompt."""
    special = set(getattr(tokenizer, "all_special_tokens", ()) or ())
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    special |= {token.content for token in added.values() if getattr(token, "special", False)}
    return tuple(sorted(t for t in special if t))


def check_plain_text(candidate_set: CandidateSet, tokens: tuple[str, ...]) -> None:
    """HarnessError naming the query and field whose text holds a control token.

    Data is text: a passage quoting ``<|im_start|>`` would otherwise end the user turn and
    start a new one inside the prompt, so the harness refuses it instead of guessing."""
    if not tokens:
        return
    for where, text in _set_texts(candidate_set):
        found = next((t for t in tokens if t in text), None)
        if found is not None:
            raise HarnessError(
                f"query {shorten(candidate_set.query_id, quote=True)}, {where}: the text holds "
                f"the model's control token {found!r}, which the tokenizer would read as a real "
                "control token; remove or rewrite it in the data"
            )


def _set_texts(candidate_set: CandidateSet) -> Iterator[tuple[str, str]]:
    """(where, text) for every piece of data text a prompt can show."""
    query = candidate_set.query
    if isinstance(query, TextQuery):
        yield "query text", query.text
    else:
        for item in query.history:
            where = f"history item {shorten(item.item_id, quote=True)}"
            yield where, item.title
            yield from _field_texts(where, item.fields)
    for candidate in candidate_set.candidates:
        where = f"candidate {shorten(candidate.doc_id, quote=True)}"
        yield where, candidate.title
        yield where, candidate.text
        yield from _field_texts(where, candidate.fields)


def _field_texts(where: str, fields: Any) -> Iterator[tuple[str, str]]:
    for name, value in fields.items():
        if isinstance(value, str):
            yield f"{where} field {name!r}", value
