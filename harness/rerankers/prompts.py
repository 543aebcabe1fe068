"""Prompt templates for the LLM rerankers, one per task, each with a stable hash.

Listwise templates follow the InvariRank marker layout: a shared span holding the instruction
and the query (or the user's history), then one segment per candidate::

    [SPAN]\\n{instruction}\\n\\n{context}\\n[/SPAN]
    \\n\\n [ITEM]\\n{candidate}\\n[/ITEM]
    \\n\\n [ITEM]\\n{candidate}\\n[/ITEM] ...

Pointwise templates split the prompt into a prefix shared by all candidates of a set (so its
KV cache is computed once) and a per-candidate suffix that ends where the yes/no answer goes.

A template's :meth:`sha256` covers every string that shapes the prompt plus
``FORMAT_VERSION``; bump that when the formatting code below changes, so provenance tells
runs with different prompts apart.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from harness.data.model import Candidate, HistoryItem, QueryContext, TextQuery, UserProfile

FORMAT_VERSION = 1
MARKERS = ("[SPAN]", "[/SPAN]", "[ITEM]", "[/ITEM]")


@dataclass(frozen=True)
class ListwiseTemplate:
    """The marker prompt: ``span`` is shared, ``item`` is repeated per candidate."""

    name: str
    instruction: str
    span: str  # fields: {instruction}, {context}; starts with [SPAN], ends with [/SPAN]
    item: str  # field: {text}; starts with [ITEM], ends with [/ITEM]
    separator: str  # between segments; feeds no score

    def render_span(self, query: QueryContext, max_history: int | None = None) -> str:
        context = render_context(query, max_history)
        return self.span.format(instruction=self.instruction, context=context)

    def render_item(self, candidate: Candidate) -> str:
        return self.item.format(text=candidate_text(candidate))

    def sha256(self) -> str:
        return _hash(self)


@dataclass(frozen=True)
class PointwiseTemplate:
    """A yes/no relevance question split into a shared prefix and a per-candidate suffix."""

    name: str
    prefix: str  # field: {context}
    suffix: str  # field: {text}; the answer token follows it
    yes: str  # each must be a single token
    no: str

    def render_prefix(self, query: QueryContext, max_history: int | None = None) -> str:
        return self.prefix.format(context=render_context(query, max_history))

    def render_suffix(self, candidate: Candidate) -> str:
        return self.suffix.format(text=candidate_text(candidate))

    def sha256(self) -> str:
        return _hash(self)


LISTWISE_RECOMMENDATION = ListwiseTemplate(
    name="invarirank-recommendation-v1",
    instruction=(
        "Rank the candidate items by how likely this user is to enjoy each of them, "
        "judging from the user's rated history (oldest first)."
    ),
    span="[SPAN]\n{instruction}\n\nUser history:\n{context}\n[/SPAN]",
    item="[ITEM]\n{text}\n[/ITEM]",
    separator="\n\n",
)

LISTWISE_TEXT = ListwiseTemplate(
    name="invarirank-text-v1",
    instruction="Rank the candidate passages by how relevant each is to the search query.",
    span="[SPAN]\n{instruction}\n\n{context}\n[/SPAN]",
    item="[ITEM]\n{text}\n[/ITEM]",
    separator="\n\n",
)

POINTWISE_RECOMMENDATION = PointwiseTemplate(
    name="pointwise-recommendation-v1",
    prefix="A user rated these items, oldest first:\n{context}\n\n",
    suffix="Candidate item: {text}\nWould this user enjoy the candidate item? Answer yes or no.\n"
    "Answer:",
    yes=" yes",
    no=" no",
)

POINTWISE_TEXT = PointwiseTemplate(
    name="pointwise-text-v1",
    prefix="Judge whether a passage is relevant to a search query.\n\n{context}\n\n",
    suffix="Passage: {text}\nIs the passage relevant to the query? Answer yes or no.\nAnswer:",
    yes=" yes",
    no=" no",
)


def listwise_template(query: QueryContext) -> ListwiseTemplate:
    """The listwise template for the query's task."""
    return LISTWISE_RECOMMENDATION if isinstance(query, UserProfile) else LISTWISE_TEXT


def pointwise_template(query: QueryContext) -> PointwiseTemplate:
    """The pointwise template for the query's task."""
    return POINTWISE_RECOMMENDATION if isinstance(query, UserProfile) else POINTWISE_TEXT


def render_context(query: QueryContext, max_history: int | None = None) -> str:
    """``Query: ...`` for text ranking; one line per history item (most recent last)."""
    if isinstance(query, TextQuery):
        return f"Query: {query.text}"
    history = query.history
    if max_history is not None:
        history = history[max(len(history) - max_history, 0) :]
    return "\n".join(history_line(item) for item in history) or "(no history)"


def history_line(item: HistoryItem) -> str:
    """``Title (year), rated 4`` — the year only when the title does not carry it already."""
    year = item.fields.get("year")
    line = item.title
    if year is not None and f"({year})" not in line:
        line = f"{line} ({year})"
    if item.rating is not None:
        line = f"{line}, rated {item.rating:g}"
    return line


def candidate_text(candidate: Candidate) -> str:
    """The text a reranker reads for a candidate: its text, else its title."""
    return candidate.text or candidate.title


def prompt_hashes(*templates: ListwiseTemplate | PointwiseTemplate) -> dict[str, str]:
    """``{template name: sha256}`` for provenance."""
    return {template.name: template.sha256() for template in templates}


def _hash(template: ListwiseTemplate | PointwiseTemplate) -> str:
    payload = {"format_version": FORMAT_VERSION, **asdict(template)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
