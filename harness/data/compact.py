"""Candidate sets and first-stage runs held compactly: no object per candidate.

A text-ranking run over tens of thousands of queries would otherwise hold a
:class:`~harness.data.model.Candidate` object (and its strings) per candidate for the whole
run. :class:`CompactSets` keeps one shared table of documents and, per query, its id, its text,
the positions of its candidates in that table and their first-stage scores (12 bytes per
candidate); a :class:`CandidateSet` is built when it is read, equal to the one the loader
used to build eagerly. It is a read-only sequence, so every reader of ``Dataset.sets`` works
unchanged; :func:`take_sets` and :func:`trim_sets` select and cut it without building sets.

:class:`RankedRun` does the same for a run as it is read (query id -> ranked (doc id, score)
list): doc ids interned once, per query an array of doc numbers and one of scores, lists built
when read. :class:`CompactSets.build` reads its arrays directly, so loading a 2-million-row run
never holds a tuple per row.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import overload

from harness.data.model import Candidate, CandidateSet, TextQuery


class RankedRun(Mapping[str, list[tuple[str, float]]]):
    """A run's ranked lists, best first: query id -> [(doc id, score)], built when read.

    Queries keep the order in which they were first added (see :class:`RunBuilder`).
    """

    def __init__(self, doc_ids: Sequence[str], lists: Mapping[str, tuple[array, array]]) -> None:
        self._doc_ids = doc_ids  # interned doc ids, by doc number
        self._lists = lists  # query id -> (doc numbers, scores), best first; never mutated

    def __getitem__(self, qid: str) -> list[tuple[str, float]]:
        numbers, scores = self._lists[qid]
        ids = self._doc_ids
        return [(ids[d], s) for d, s in zip(numbers, scores, strict=True)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._lists)

    def __len__(self) -> int:
        return len(self._lists)

    def __contains__(self, qid: object) -> bool:
        return qid in self._lists  # Mapping's default would build the list

    def arrays(self, qid: str) -> tuple[array, array]:
        """A query's doc numbers (into :attr:`doc_table`) and scores, best first (shared)."""
        return self._lists[qid]

    @property
    def doc_table(self) -> Sequence[str]:
        return self._doc_ids

    def sizes(self) -> dict[str, int]:
        """Query id -> number of candidates, without building the lists."""
        return {qid: len(numbers) for qid, (numbers, _) in self._lists.items()}

    def doc_ids(self) -> set[str]:
        """Every doc id some query lists."""
        used = bytearray(len(self._doc_ids))
        for numbers, _ in self._lists.values():
            for d in numbers:
                used[d] = 1
        return {doc_id for doc_id, hit in zip(self._doc_ids, used, strict=True) if hit}

    def select(self, keep: Callable[[str], bool]) -> RankedRun:
        """The queries for which ``keep(query id)`` holds, in this run's order."""
        return RankedRun(self._doc_ids, {q: v for q, v in self._lists.items() if keep(q)})

    def cut(self, depth: int | None) -> RankedRun:
        """Every list cut to its top ``depth`` (``None``: this run, whole)."""
        if depth is None:
            return self
        lists = {q: (n[:depth], s[:depth]) for q, (n, s) in self._lists.items()}
        return RankedRun(self._doc_ids, lists)


class RunBuilder:
    """Builds a :class:`RankedRun` row by row, holding only the current query as a dict.

    Runs are written grouped by query: when the query id changes, the finished query is
    sorted (score descending, ties by doc id descending: trec_eval's order) into arrays. A
    query that comes back later is reopened from its arrays, so any row order gives the
    same result.
    """

    def __init__(self) -> None:
        self._number: dict[str, int] = {}  # doc id -> doc number
        self._doc_ids: list[str] = []
        self._lists: dict[str, tuple[array, array]] = {}
        self._qid: str | None = None
        self._open: dict[int, float] = {}  # the current query: doc number -> score

    def add(self, qid: str, doc_id: str, score: float) -> bool:
        """Record a row; ``False`` (nothing recorded) if ``qid`` already lists ``doc_id``."""
        if qid != self._qid:
            self._close()
            held = self._lists.setdefault(qid, (array("i"), array("d")))  # first-seen order
            self._qid, self._open = qid, dict(zip(*held, strict=True))
        number = self._number.setdefault(doc_id, len(self._doc_ids))
        if number == len(self._doc_ids):
            self._doc_ids.append(doc_id)
        elif number in self._open:
            return False
        self._open[number] = score
        return True

    def build(self) -> RankedRun:
        """The run so far; the builder starts over empty (the run is not shared with it)."""
        self._close()
        run = RankedRun(tuple(self._doc_ids), self._lists)
        self._number, self._doc_ids, self._lists = {}, [], {}
        return run

    def _close(self) -> None:
        if self._qid is None:
            return
        ids = self._doc_ids
        rows = sorted(self._open.items(), key=lambda row: (row[1], ids[row[0]]), reverse=True)
        self._lists[self._qid] = (
            array("i", [d for d, _ in rows]),
            array("d", [s for _, s in rows]),
        )
        self._qid, self._open = None, {}


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
        body) mapping; ``text_of(title, body)`` is the candidate text shown. A
        :class:`RankedRun` is read through its arrays, with no tuple per candidate."""
        position: dict[str, int] = {}
        ids: list[str] = []
        titles: list[str] = []
        texts: list[str] = []
        rows, doc_rows, score_rows = [], [], []
        for qid in query_ids:
            if isinstance(ranked, RankedRun):
                numbers, scores = ranked.arrays(qid)
                table = ranked.doc_table
                doc_ids: Iterable[str] = (table[d] for d in numbers)
            else:
                doc_ids = (doc_id for doc_id, _ in ranked[qid])
                scores = array("d", (score for _, score in ranked[qid]))
            where = array("i")
            for doc_id in doc_ids:
                if doc_id not in position:
                    position[doc_id] = len(ids)
                    title, body = docs[doc_id]
                    ids.append(doc_id)
                    titles.append(title)
                    texts.append(text_of(title, body))
                where.append(position[doc_id])
            rows.append((qid, queries[qid]))
            doc_rows.append(where)
            score_rows.append(scores)  # never mutated: sharing a RankedRun's array is safe
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

    def ranked_ids(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        """(query id, candidate doc ids best first) of every set, without building them."""
        doc_ids = self._table.doc_ids
        for (qid, _), docs in zip(self._queries, self._docs, strict=True):
            yield qid, tuple(doc_ids[d] for d in docs)


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


def set_ranked_ids(sets: Sequence[CandidateSet]) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(query id, candidate doc ids) of every set, in order: what plans, lengths and keys
    need, without building a compact dataset's candidates (five times cheaper)."""
    if isinstance(sets, CompactSets):
        return sets.ranked_ids()
    return ((s.query_id, s.doc_ids) for s in sets)
