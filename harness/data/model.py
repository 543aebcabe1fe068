"""Typed records that every loader produces and every reranker consumes.

A *candidate set* is one query (a text query or a user profile) with its candidates in
first-stage order. Judgments live beside the sets in :class:`Dataset`, keyed by query id,
so rerankers never see them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Task = Literal["text-ranking", "recommendation"]

# query id -> doc id -> graded relevance (0 = judged not relevant)
Qrels = Mapping[str, Mapping[str, int]]


@dataclass(frozen=True)
class Candidate:
    """One item to rerank: a passage or a recommendable item."""

    doc_id: str
    text: str
    first_stage_score: float
    title: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TextQuery:
    """Query context for text ranking."""

    text: str


@dataclass(frozen=True)
class HistoryItem:
    """One past interaction of a user, oldest first in :class:`UserProfile`."""

    item_id: str
    title: str
    rating: float | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UserProfile:
    """Query context for recommendation: the user's recent interactions, oldest first."""

    user_id: str
    history: tuple[HistoryItem, ...]


QueryContext = TextQuery | UserProfile


@dataclass(frozen=True)
class CandidateSet:
    """A query and its candidates in first-stage order (best first)."""

    query_id: str
    query: QueryContext
    candidates: tuple[Candidate, ...]

    @property
    def doc_ids(self) -> tuple[str, ...]:
        return tuple(c.doc_id for c in self.candidates)

    def __len__(self) -> int:
        return len(self.candidates)


@dataclass(frozen=True)
class Dataset:
    """Candidate sets plus judgments, with what is needed to reproduce them.

    ``fingerprint`` is a content hash of the sets and qrels as loaded (before
    ``--depth``/``--queries`` are applied); ``notes`` carries loader facts a report
    should show (e.g. how many users were dropped, which first stage built the lists).
    """

    name: str
    task: Task
    sets: Sequence[CandidateSet]  # a tuple, or compact sets built as they are read
    qrels: Qrels
    fingerprint: str
    source: str
    notes: Mapping[str, Any] = field(default_factory=dict)


def dropped_queries(notes: Mapping[str, Any]) -> dict[str, int]:
    """The loader's counts of queries or users left out (note keys naming ``dropped`` or
    ``skipped``, with a positive count), so the console and summaries can say so."""
    return {
        key: value
        for key, value in notes.items()
        if ("dropped" in key or "skipped" in key)
        and isinstance(value, int)
        and not isinstance(value, bool)
        and value > 0
    }


def describe_dropped(notes: Mapping[str, Any]) -> str:
    """``"12 dropped: dropped_unjudged_queries 12"`` or ``""`` when the loader dropped none."""
    dropped = dropped_queries(notes)
    if not dropped:
        return ""
    parts = ", ".join(f"{key.replace('_', ' ')} {count}" for key, count in dropped.items())
    return f"{sum(dropped.values())} left out by the loader: {parts}"
