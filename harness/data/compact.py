"""Candidate sets held compactly: many queries' candidates without an object per candidate.

A text-ranking run over tens of thousands of queries would otherwise hold a
:class:`~harness.data.model.Candidate` object (and its strings) per candidate for the whole
run. :class:`CompactSets` keeps one shared table of documents and, per query, its id, its text,
the positions of its candidates in that table and their first-stage scores (12 bytes per
candidate); a :class:`CandidateSet` is built when it is read, equal to the one the loader
used to build eagerly. It is a read-only sequence, so every reader of ``Dataset.sets`` works
unchanged; :func:`take_sets` and :func:`trim_sets` select and cut it without building sets.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import overload

from harness.data.model import Candidate, CandidateSet, TextQuery


@dataclass(frozen=True)
class _Table:
    """The documents every set points into: ids, titles and texts (as shown), by position."""

    doc_ids: tuple[str, ...]
    titles: tuple[str, ...]
    texts: tuple[str, ...]


class CompactSets(Sequence[CandidateSet]):
    """Text-ranking candidate sets (see the module docstring)."""

    def __init__(
        self,
        table: _Table,
        queries: Sequence[tuple[str, str]],
        docs: Sequence[array],
        scores: Sequence[array],
    ) -> None:
        self._table = table
        self._queries = queries  # (query id, query text) per set
        self._docs = docs  # table positions of each set's candidates, best first
        self._scores = scores

    @classmethod
    def build(
        cls,
        query_ids: Iterable[str],
        queries: Mapping[str, str],
        ranked: Mapping[str, Sequence[tuple[str, float]]],
        docs: Mapping[str, tuple[str, str]],
        text_of: Callable[[str, str], str],
    ) -> CompactSets:
        """Sets for ``query_ids`` from ranked (doc id, score) lists and a doc id -> (title,
        body) mapping; ``text_of(title, body)`` is the candidate text shown."""
        position: dict[str, int] = {}
        ids, titles, texts = [], [], []
        rows, doc_rows, score_rows = [], [], []
        for qid in query_ids:
            where = array("i")
            for doc_id, _ in ranked[qid]:
                if doc_id not in position:
                    position[doc_id] = len(ids)
                    title, body = docs[doc_id]
                    ids.append(doc_id)
                    titles.append(title)
                    texts.append(text_of(title, body))
                where.append(position[doc_id])
            rows.append((qid, queries[qid]))
            doc_rows.append(where)
            score_rows.append(array("d", (score for _, score in ranked[qid])))
        return cls(_Table(tuple(ids), tuple(titles), tuple(texts)), rows, doc_rows, score_rows)

    def __len__(self) -> int:
        return len(self._queries)

    @overload
    def __getitem__(self, index: int) -> CandidateSet: ...
    @overload
    def __getitem__(self, index: slice) -> CompactSets: ...
    def __getitem__(self, index: int | slice) -> CandidateSet | CompactSets:
        if isinstance(index, slice):
            return self.take(range(*index.indices(len(self))))
        qid, text = self._queries[index]
        table = self._table
        return CandidateSet(
            query_id=qid,
            query=TextQuery(text),
            candidates=tuple(
                Candidate(
                    doc_id=table.doc_ids[d],
                    text=table.texts[d],
                    first_stage_score=score,
                    title=table.titles[d],
                )
                for d, score in zip(self._docs[index], self._scores[index], strict=True)
            ),
        )

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence of the same sets (a tuple of them too)."""
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def take(self, positions: Iterable[int]) -> CompactSets:
        """The sets at ``positions`` (in that order), sharing this one's document table."""
        keep = list(positions)
        return CompactSets(
            self._table,
            [self._queries[k] for k in keep],
            [self._docs[k] for k in keep],
            [self._scores[k] for k in keep],
        )

    def trimmed(self, depth: int) -> CompactSets:
        """Every set cut to its top ``depth`` candidates."""
        return CompactSets(
            self._table,
            self._queries,
            [d[:depth] for d in self._docs],
            [s[:depth] for s in self._scores],
        )

    def query_ids(self) -> list[str]:
        return [qid for qid, _ in self._queries]


def take_sets(sets: Sequence[CandidateSet], positions: Iterable[int]) -> Sequence[CandidateSet]:
    """The sets at ``positions``, without building compact sets."""
    if isinstance(sets, CompactSets):
        return sets.take(positions)
    return tuple(sets[k] for k in positions)


def trim_sets(sets: Sequence[CandidateSet], depth: int) -> Sequence[CandidateSet]:
    """Every set cut to its top ``depth`` candidates, without building compact sets."""
    if isinstance(sets, CompactSets):
        return sets.trimmed(depth)
    return tuple(replace(s, candidates=s.candidates[:depth]) for s in sets)


def set_query_ids(sets: Sequence[CandidateSet]) -> list[str]:
    """The sets' query ids, in order, without building compact sets."""
    if isinstance(sets, CompactSets):
        return sets.query_ids()
    return [s.query_id for s in sets]
