"""Readers for the TREC text formats (qrels, runs, topics) and BEIR corpora, plus a loader
that joins them into a text-ranking :class:`Dataset`.

Every reader streams its file line by line, so a 10-million-line qrels or run costs memory
for what it returns, not for the file. Each malformed line raises :class:`DataFormatError`
naming the file and the 1-based line number; a missing file raises :class:`HarnessError`.

Run order and ties: ``trec_eval`` ignores the rank column and re-sorts every query's docs by
score descending, breaking ties by docno *descending* (``strcmp(doc2, doc1)`` in its
``comp_sim_docno``). :func:`read_run` does exactly the same, so the first-stage order the
harness shows a reranker is the order ``trec_eval`` would score, and first-stage metrics
computed here reproduce ``trec_eval`` figures even on runs with tied scores.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from harness.data.compact import CompactSets, RankedRun, RunBuilder
from harness.data.fingerprint import build_dataset
from harness.data.formats import DataFormat
from harness.data.model import Dataset
from harness.errors import DataFormatError, HarnessError, shorten

PathLike = str | Path


def iter_lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(1-based line number, line without its newline)``, one line in memory at a time.

    A missing or unreadable file raises :class:`HarnessError`; bytes that are not UTF-8 raise
    :class:`DataFormatError` at the offending line.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise HarnessError(f"cannot read {path}: {exc.strerror or exc}") from None
    # Binary read + per-line decode: a text-mode reader decodes ahead in chunks, so its
    # UnicodeDecodeError would point at the wrong line.
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataFormatError(path, "not valid UTF-8 text", lineno) from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")  # byte-order mark some editors write
            yield lineno, line.rstrip("\r\n")


def read_qrels(path: PathLike) -> dict[str, dict[str, int]]:
    """Read TREC qrels ``qid iter docid grade``: query id -> doc id -> integer grade.

    The second column is ignored (as trec_eval does). A (qid, docid) pair repeated with the
    same grade is accepted; with a different grade it is an error, since no grade can be
    chosen without guessing.
    """
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in iter_lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            raise DataFormatError(
                path, f"expected 4 fields 'qid iter docid grade', got {len(parts)}", lineno
            )
        qid, _, doc_id, grade_text = parts
        add_judgment(qrels, qid, doc_id, grade_text, path, lineno)
    return qrels


def has_relevant(judgments: Mapping[str, int] | None) -> bool:
    """Whether a query's judgments include a relevant (grade > 0) document."""
    return judgments is not None and any(grade > 0 for grade in judgments.values())


def add_judgment(
    qrels: dict[str, dict[str, int]],
    qid: str,
    doc_id: str,
    grade_text: str,
    path: PathLike,
    lineno: int,
) -> None:
    """Record one qrels row; the same pair again is fine only with the same grade."""
    try:
        grade = int(grade_text)
    except ValueError:
        raise DataFormatError(
            path, f"grade {shorten(grade_text, quote=True)} is not an integer", lineno
        ) from None
    previous = qrels.setdefault(qid, {}).setdefault(doc_id, grade)
    if previous != grade:
        raise DataFormatError(
            path,
            f"query {shorten(qid)} doc {shorten(doc_id)} judged twice with different grades "
            f"({previous} and {grade})",
            lineno,
        )


def read_run(path: PathLike) -> RankedRun:
    """Read a TREC run ``qid Q0 docid rank score tag``: query id -> [(doc id, score)], best first.

    Queries keep the order in which they first appear. Docs are ordered as trec_eval orders
    them: score descending, ties by doc id descending; the rank column is validated as an
    integer but not used. A doc listed twice for one query is an error. The run is held
    compactly (a :class:`RankedRun`: arrays, no object per row); its lists are built when read.
    """
    run = RunBuilder()
    for lineno, line in iter_lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise DataFormatError(
                path, f"expected 6 fields 'qid Q0 docid rank score tag', got {len(parts)}", lineno
            )
        qid, _, doc_id, rank_text, score_text, _ = parts
        try:
            int(rank_text)
        except ValueError:
            raise DataFormatError(
                path, f"rank {shorten(rank_text, quote=True)} is not an integer", lineno
            ) from None
        try:
            score = float(score_text)
        except ValueError:
            raise DataFormatError(
                path, f"score {shorten(score_text, quote=True)} is not a number", lineno
            ) from None
        if not math.isfinite(score):
            raise DataFormatError(
                path, f"score {shorten(score_text, quote=True)} is not finite", lineno
            )
        if not run.add(qid, doc_id, score):
            raise DataFormatError(
                path, f"query {shorten(qid)} lists doc {shorten(doc_id)} twice", lineno
            )
    return run.build()


def read_topics_tsv(path: PathLike) -> dict[str, str]:
    """Read ``qid<TAB>text`` topics: query id -> query text (file order; blank lines skipped)."""
    topics: dict[str, str] = {}
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        qid, sep, text = line.partition("\t")
        qid, text = qid.strip(), text.strip()
        if not sep:
            raise DataFormatError(path, "expected 'qid<TAB>text', found no tab", lineno)
        if not qid:
            raise DataFormatError(path, "empty query id", lineno)
        if not text:
            raise DataFormatError(path, f"query {shorten(qid)} has empty text", lineno)
        if qid in topics:
            raise DataFormatError(path, f"query {shorten(qid)} listed twice", lineno)
        topics[qid] = text
    return topics


def iter_json_records(path: PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream ``(line number, object)`` from a JSON-lines file, one JSON object per line."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(path, f"invalid JSON: {exc.msg}", lineno) from None
        if not isinstance(record, dict):
            raise DataFormatError(path, "expected a JSON object per line", lineno)
        yield lineno, record


def record_id(path: PathLike, record: Mapping[str, Any], lineno: int) -> str:
    """A BEIR record's ``_id`` as a string (it may be a JSON number)."""
    value = record.get("_id")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise DataFormatError(path, "missing or non-string '_id'", lineno)
    return str(value)


def iter_corpus_jsonl(
    path: PathLike, wanted_ids: set[str] | None = None
) -> Iterator[tuple[str, str, str]]:
    """Stream ``(doc id, title, text)`` from a BEIR ``corpus.jsonl``.

    With ``wanted_ids`` only those docs are validated and yielded, so a multi-million-passage
    corpus costs memory for the candidates alone; a duplicate among yielded docs is an error.
    ``title`` may be absent (BEIR corpora without titles).
    """
    seen: set[str] = set()
    for lineno, record in iter_json_records(path):
        doc_id = record_id(path, record, lineno)
        if wanted_ids is not None and doc_id not in wanted_ids:
            continue
        title, text = record.get("title") or "", record.get("text")
        if not isinstance(text, str):
            raise DataFormatError(
                path, f"doc {shorten(doc_id)}: missing or non-string 'text'", lineno
            )
        if not isinstance(title, str):
            raise DataFormatError(path, f"doc {shorten(doc_id)}: non-string 'title'", lineno)
        if doc_id in seen:
            raise DataFormatError(path, f"doc {shorten(doc_id)} listed twice", lineno)
        seen.add(doc_id)
        yield doc_id, title, text


def read_corpus_jsonl(
    path: PathLike, wanted_ids: set[str] | None = None
) -> dict[str, tuple[str, str]]:
    """Read a BEIR ``corpus.jsonl`` into doc id -> (title, text); see :func:`iter_corpus_jsonl`."""
    return {doc_id: (title, text) for doc_id, title, text in iter_corpus_jsonl(path, wanted_ids)}


def passage_text(title: str, text: str) -> str:
    """Join title and body with a space, as Pyserini's BEIR "flat" indexes build ``contents``."""
    return " ".join(part for part in (title.strip(), text.strip()) if part)


def load_trec_dataset(
    run_path: PathLike,
    topics_path: PathLike,
    corpus_path: PathLike,
    qrels_path: PathLike,
    *,
    name: str,
) -> Dataset:
    """Join a TREC run, topics, a BEIR corpus and qrels into a text-ranking dataset.

    Candidate lists follow :func:`read_run` order (trec_eval's). Queries with no judgment in
    the qrels are dropped (trec_eval evaluates only queries present in both files) and
    counted in ``notes["dropped_unjudged_queries"]``; qrels are kept only for the remaining
    queries. A run query missing from the topics or a run doc missing from the corpus is an
    error naming the run file line where it first appears.
    """
    run = read_run(run_path)
    topics = read_topics_tsv(topics_path)
    qrels = read_qrels(qrels_path)
    unknown = next((qid for qid in run if qid not in topics), None)
    if unknown is not None:
        raise DataFormatError(
            run_path,
            f"query {shorten(unknown)} is not in topics file {topics_path}",
            _first_line(run_path, lambda parts: parts[0] == unknown),
        )
    wanted = run.doc_ids()
    corpus = read_corpus_jsonl(corpus_path, wanted)
    if len(corpus) < len(wanted):  # name the first missing doc in run order
        qid, doc_id = next((q, d) for q in run for d, _ in run[q] if d not in corpus)
        raise DataFormatError(
            run_path,
            f"doc {shorten(doc_id)} (query {shorten(qid)}) is not in corpus {corpus_path}",
            _first_line(run_path, lambda parts: parts[0] == qid and parts[2] == doc_id),
        )
    return build_text_dataset(
        run,
        topics,
        corpus,
        qrels,
        name=name,
        source=f"run={run_path}; topics={topics_path}; corpus={corpus_path}; qrels={qrels_path}",
        notes={},
    )


def build_text_dataset(
    ranked: Mapping[str, list[tuple[str, float]]],
    queries: Mapping[str, str],
    docs: Mapping[str, tuple[str, str]],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    name: str,
    source: str,
    notes: Mapping[str, Any],
) -> Dataset:
    """Join ranked lists, query texts, doc (title, text) and qrels; callers check the ids.

    Queries without a relevant judgment or without candidates are dropped and counted in the
    notes (trec_eval skips them too; nDCG is undefined with no relevant document).
    """
    # a RankedRun counts its lists without building them
    sizes = (
        ranked.sizes() if isinstance(ranked, RankedRun) else {q: len(h) for q, h in ranked.items()}
    )
    kept = [qid for qid, size in sizes.items() if size and has_relevant(qrels.get(qid))]
    # compact: no object per candidate for the run's length (built as each set is read)
    sets = CompactSets.build(kept, queries, ranked, docs, passage_text)
    return build_dataset(
        name=name,
        task="text-ranking",
        sets=sets,
        qrels={qid: dict(qrels[qid]) for qid in kept},
        source=source,
        notes={
            **notes,
            "queries_in_run": len(ranked),
            "dropped_queries_without_candidates": sum(1 for size in sizes.values() if not size),
            "dropped_unjudged_queries": sum(
                1 for q, size in sizes.items() if size and not has_relevant(qrels.get(q))
            ),
            "judged_queries_not_in_run": sum(1 for qid in qrels if qid not in ranked),
            "run_order": "score desc, ties by doc id desc (trec_eval)",
        },
    )


def _first_line(path: PathLike, match: Callable[[list[str]], bool]) -> int | None:
    """Line number of the first line whose fields satisfy ``match`` (error path only)."""
    for lineno, line in iter_lines(path):
        parts = line.split()
        if parts and match(parts):
            return lineno
    return None


# --- the format ----------------------------------------------------------------------------


def one_qrels(folder: Path) -> str:
    """The name of a folder's one ``qrels*`` file (the layouts that take TREC qrels)."""
    qrels = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.startswith("qrels"))
    if len(qrels) != 1:
        raise HarnessError(f"{folder}: expected exactly one qrels* file, found {qrels or 'none'}")
    return qrels[0]


def _detect(folder: Path) -> dict[str, Any] | None:
    names = {p.name for p in folder.iterdir() if p.is_file()}
    runs = sorted(n for n in names if n.endswith((".trec", ".run")) or n.startswith("run"))
    if len(runs) != 1 or not {"topics.tsv", "corpus.jsonl"} <= names:
        return None
    return {
        "run": runs[0],
        "topics": "topics.tsv",
        "corpus": "corpus.jsonl",
        "qrels": one_qrels(folder),
    }


FORMAT = DataFormat(
    name="trec",
    load=lambda r: load_trec_dataset(
        r.files["run"], r.files["topics"], r.files["corpus"], r.files["qrels"], name=r.name
    ),
    files=("run", "topics", "corpus", "qrels"),
    detect=_detect,
    layout="a *.trec or run* run file + topics.tsv + corpus.jsonl + one qrels* file",
)
