"""Prompt templates for the LLM rerankers: what each part says, and how a query or a user's
history and each candidate become text.

The templates themselves are data: YAML files under ``templates/`` (loaded and validated by
:mod:`harness.rerankers.prompts.templates`); the classes here render them.

Listwise marker templates follow the InvariRank layout: a shared span holding the instruction
and the query (or the user's history), then one segment per candidate::

    [SPAN]\\n{instruction}\\n\\n{context}\\n[/SPAN]
    \\n\\n [ITEM]\\n{candidate}\\n[/ITEM]
    \\n\\n [ITEM]\\n{candidate}\\n[/ITEM] ...

Pointwise templates split the prompt into a prefix shared by all candidates of a set (so its
KV cache is computed once) and a per-candidate suffix that ends where the yes/no answer goes.

A template's :meth:`sha256` covers every string that shapes the prompt plus
``FORMAT_VERSION``; bump that when the rendering code below changes, so provenance tells runs
with different prompts apart.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from harness.data.model import Candidate, HistoryItem, QueryContext, TextQuery

FORMAT_VERSION = 2
MARKERS = ("[SPAN]", "[/SPAN]", "[ITEM]", "[/ITEM]")
HistoryOrder = Literal["oldest-first", "most-recent-first"]
HISTORY_ORDERS: tuple[str, ...] = ("oldest-first", "most-recent-first")
FIELD_NAMES: tuple[str, ...] = ("year", "rating", "genres")  # optional item fields


@dataclass(frozen=True)
class ContextFormat:
    """How a query, a user's history and a candidate become text.

    ``history_line`` and ``candidate`` are format strings over ``{title}``, ``{text}``,
    ``{number}`` (1-based position in the list) and the optional fields ``{year}``,
    ``{rating}``, ``{genres}``. An optional field renders through its fragment in ``fields``
    (e.g. ``", rating: {value}"``) where the item has a value, and as nothing where it has none,
    so one line format serves items with and without it. The year counts as absent when the
    title already carries ``(year)``; a rating is a float (``{value}`` prints ``5.0``,
    ``{value:g}`` prints ``5``); genres are joined with ``", "``.
    """

    query: str = "Query: {query}"  # text ranking: the {context} of the query
    history_line: str = "{title}{year}{rating}"
    history_order: HistoryOrder = "oldest-first"
    history_header: str = ""  # a line before the history lines (omitted when empty)
    empty_history: str = "(no history)"  # the history part when a user has none ("" drops it)
    candidate: str = "{text}"
    fields: dict[str, str] = field(
        default_factory=lambda: {"year": " ({value})", "rating": ", rated {value:g}"}
    )

    def render(self, query: QueryContext, max_history: int | None = None) -> str:
        """The query line (text ranking) or the history block (recommendation). ``max_history``
        keeps the most recent items."""
        if isinstance(query, TextQuery):
            return self.query.format(query=query.text)
        history = query.history
        if max_history is not None:
            history = history[max(len(history) - max_history, 0) :]
        if self.history_order == "most-recent-first":
            history = history[::-1]
        lines = [self.history_item(item, i + 1) for i, item in enumerate(history)]
        body = "\n".join(lines) or self.empty_history
        return "\n".join(part for part in (self.history_header, body) if part)

    def history_item(self, item: HistoryItem, number: int) -> str:
        values = {**item.fields, "rating": item.rating}
        return self.history_line.format(
            **self._fields(item.title, values), title=item.title, text=item.title, number=number
        )

    def candidate_line(self, candidate: Candidate, number: int = 1) -> str:
        """A candidate as the template shows it."""
        title = candidate.title or candidate.text
        return self.candidate.format(
            **self._fields(title, candidate.fields),
            title=title,
            text=candidate_text(candidate),
            number=number,
        )

    def _fields(self, title: str, values: dict[str, Any] | Any) -> dict[str, str]:
        out = {}
        for name in FIELD_NAMES:
            value = _field_value(name, values.get(name), title)
            fragment = self.fields.get(name, "")
            out[name] = fragment.format(value=value) if value is not None and fragment else ""
        return out


@dataclass(frozen=True)
class ListwiseTemplate:
    """The marker prompt: ``span`` is shared, ``item`` is repeated per candidate."""

    name: str
    instruction: str
    span: str  # fields: {instruction}, {context}; starts with [SPAN], ends with [/SPAN]
    item: str  # field: {text}; starts with [ITEM], ends with [/ITEM]
    separator: str  # between segments; feeds no score
    context: ContextFormat = field(default_factory=ContextFormat)

    def render_span(self, query: QueryContext, max_history: int | None = None) -> str:
        context = self.context.render(query, max_history)
        return self.span.format(instruction=self.instruction, context=context)

    def render_item(self, candidate: Candidate) -> str:
        return self.item.format(text=self.context.candidate_line(candidate))

    def sha256(self) -> str:
        return template_hash(self)


@dataclass(frozen=True)
class PointwiseTemplate:
    """A yes/no relevance question split into a shared prefix and a per-candidate suffix."""

    name: str
    prefix: str  # field: {context}
    suffix: str  # field: {text}; the answer token follows it
    yes: str  # each must be a single token
    no: str
    context: ContextFormat = field(default_factory=ContextFormat)

    def render_prefix(self, query: QueryContext, max_history: int | None = None) -> str:
        return self.prefix.format(context=self.context.render(query, max_history))

    def render_suffix(self, candidate: Candidate) -> str:
        return self.suffix.format(text=self.context.candidate_line(candidate))

    def sha256(self) -> str:
        return template_hash(self)


@dataclass(frozen=True)
class AttentionTemplate:
    """The ICR prompt: ``opening`` before the numbered candidates, then ``closing`` and the
    ``query`` block (field ``{query}``: the rendered query or history, or the content-free
    calibration query), joined by ``separator``."""

    name: str
    opening: str
    closing: str
    query: str  # field: {query}
    separator: str = "\n\n"
    context: ContextFormat = field(default_factory=lambda: ContextFormat(query="{query}"))

    def render_query(self, context: str) -> str:
        return self.query.format(query=context)

    def sha256(self) -> str:
        return template_hash(self)


def render_context(query: QueryContext, max_history: int | None = None) -> str:
    """The query or history as the project's default format writes it (``Query: …``; one
    ``Title (year), rated 4`` line per item, oldest first): for methods without a template."""
    return ContextFormat().render(query, max_history)


def candidate_text(candidate: Candidate) -> str:
    """The text a reranker reads for a candidate: its text, else its title."""
    return candidate.text or candidate.title


def template_hash(template: Any) -> str:
    """sha256 over every string of a template (a dataclass) and ``FORMAT_VERSION``. A
    template that normalises no text hashes as before ``normalize`` existed, so runs of the
    templates that do not use it keep their prompt hashes."""
    payload = {"format_version": FORMAT_VERSION, **asdict(template)}
    if not getattr(getattr(template, "normalize", None), "active", False):
        payload.pop("normalize", None)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _field_value(name: str, value: Any, title: str) -> Any:
    """The value an optional field renders, or None where the item has none."""
    if value is None or value == "" or value == () or value == []:
        return None
    if name == "year":
        return None if f"({value})" in title else value
    if name == "rating":
        return float(value)
    if name == "genres":
        return ", ".join(map(str, value)) if not isinstance(value, str) else value
    return value
