"""Listwise prompts whose answer is titles (LLMRank's sequential-recommendation prompt).

One user message: ``head`` (the user's history, ``{history}``, and ``{count}``), the list of
candidates in the shown order, ``tail`` (``{count}``). History entries and candidate entries
are formatted with ``{index}`` (0-based position), ``{number}`` (1-based) and ``{title}``, and
each list is written in one of two ways (``lists``):

* ``python``: as Python prints a list of strings (``['0. Halo', "1. Tony Hawk's"]``: repr
  quoting and escapes), which is what LLMRank's f-strings put in its prompts;
* ``lines``: one entry per line.

``system`` is optional: unset, the conversation has no system turn (LLMRank sends the user
message alone; a model's chat template may add its own default). The model answers with
titles, which :mod:`harness.rerankers.prompts.title_parser` matches back to the candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.data.model import QueryContext, UserProfile
from harness.errors import HarnessError
from harness.rerankers.prompts.base import template_hash
from harness.rerankers.prompts.listwise import ChatPrompt, chat_prompt

LIST_STYLES: tuple[str, ...] = ("python", "lines")


@dataclass(frozen=True)
class TitlesTemplate:
    """A titles-answered listwise prompt; see the module docstring for the parts."""

    name: str
    head: str  # fields: {history}, {count}
    history_entry: str  # fields: {index}, {number}, {title}
    candidate_entry: str  # fields: {index}, {number}, {title}
    tail: str  # field: {count}
    lists: str = "lines"
    system: str = ""

    def render_history(self, query: QueryContext, max_history: int | None = None) -> str:
        """The user's history, oldest first; ``max_history`` keeps the most recent items."""
        if not isinstance(query, UserProfile):
            raise HarnessError(
                f"template {self.name!r} lists a user's history; it cannot render a text query"
            )
        history = query.history
        if max_history is not None:
            history = history[max(len(history) - max_history, 0) :]
        return self._list(self.history_entry, [item.title for item in history])

    def render_candidates(self, titles: Sequence[str]) -> str:
        return self._list(self.candidate_entry, titles)

    def user_message(
        self, query: QueryContext, titles: Sequence[str], max_history: int | None = None
    ) -> str:
        """The whole user message for these candidate titles, in the order shown."""
        return self._head(query, max_history, len(titles)) + self._rest(titles)

    def prompt(
        self,
        tokenizer: Any,
        query: QueryContext,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        max_history: int | None = None,
        prime: str = "",
    ) -> ChatPrompt:
        """The window's prompt (the listwise rerankers' call); ``texts`` are the candidates'
        titles, ``labels`` only give their count (entries are numbered by position)."""
        head = self._head(query, max_history, len(labels))
        turns = [("system", self.system)] if self.system else []
        turns.append(("user", head + self._rest(texts)))
        return chat_prompt(tokenizer, turns, head, prime)

    def sha256(self) -> str:
        return template_hash(self)

    def _head(self, query: QueryContext, max_history: int | None, count: int) -> str:
        return self.head.format(history=self.render_history(query, max_history), count=count)

    def _rest(self, titles: Sequence[str]) -> str:
        return self.render_candidates(titles) + self.tail.format(count=len(titles))

    def _list(self, entry: str, titles: Sequence[str]) -> str:
        entries = [entry.format(index=i, number=i + 1, title=t) for i, t in enumerate(titles)]
        return repr(entries) if self.lists == "python" else "\n".join(entries)
