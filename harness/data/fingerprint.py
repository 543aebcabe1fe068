"""Content hash of a loaded dataset, so a result can name exactly which candidate lists it used.

The hash covers what a reranker sees and what metrics read: query ids and contexts, the
candidates in first-stage order (ids, titles, texts, scores, fields) and the judgments. It is
computed over canonical JSON (sorted keys, shortest float repr), so it does not depend on dict
insertion order, the machine, or the file format the data came from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.data.model import (
    Candidate,
    CandidateSet,
    Dataset,
    Qrels,
    QueryContext,
    Task,
    TextQuery,
)

FINGERPRINT_CHARS = 16


def build_dataset(
    *,
    name: str,
    task: Task,
    sets: Sequence[CandidateSet],
    qrels: Qrels,
    source: str,
    notes: Mapping[str, Any] | None = None,
) -> Dataset:
    """The one way a loader makes its dataset: the fingerprint is computed here, from
    exactly the sets (a list is kept as a tuple) and qrels the dataset holds."""
    kept = tuple(sets) if isinstance(sets, list) else sets
    return Dataset(
        name=name,
        task=task,
        sets=kept,
        qrels=qrels,
        fingerprint=dataset_fingerprint(kept, qrels),
        source=source,
        notes=dict(notes or {}),
    )


def dataset_fingerprint(sets: Iterable[CandidateSet], qrels: Qrels) -> str:
    """First 16 hex chars of sha256 over the canonical JSON of ``{"qrels": ..., "sets": ...}``.

    Hashed as it is written, one set at a time: the bytes are those of dumping the whole
    payload at once (keys sorted: ``qrels`` before ``sets``), so the fingerprint is the same
    as ever, and memory holds one set's record, not the dataset's.
    """
    digest = hashlib.sha256()
    qrels_rows = [
        [qid, sorted([doc_id, int(grade)] for doc_id, grade in qrels[qid].items())]
        for qid in sorted(qrels)
    ]
    digest.update(('{"qrels":' + _canonical(qrels_rows) + ',"sets":[').encode("utf-8"))
    for k, cset in enumerate(sets):
        digest.update((("," if k else "") + _canonical(_set_record(cset))).encode("utf-8"))
    digest.update(b"]}")
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def _canonical(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_plain
    )


def _set_record(cset: CandidateSet) -> dict[str, Any]:
    return {
        "query_id": cset.query_id,
        "query": _query_record(cset.query),
        "candidates": [_candidate_record(c) for c in cset.candidates],
    }


def _query_record(query: QueryContext) -> dict[str, Any]:
    if isinstance(query, TextQuery):
        return {"kind": "text", "text": query.text}
    return {
        "kind": "user",
        "user_id": query.user_id,
        "history": [[h.item_id, h.title, h.rating, h.fields] for h in query.history],
    }


def _candidate_record(c: Candidate) -> list[Any]:
    return [c.doc_id, c.title, c.text, float(c.first_stage_score), c.fields]


def _plain(value: Any) -> Any:
    """JSON fallback for field values json cannot encode itself (read-only mappings, sets)."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(f"cannot fingerprint a field value of type {type(value).__name__}")
