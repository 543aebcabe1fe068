"""BEIR folders (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``) as text-ranking data.

Candidates come from a TREC run when one is given (the card's ``run:``, or the one ``*.trec`` /
``*.run`` file of a folder passed as ``--dataset PATH``); otherwise a first-stage BM25 (bm25s)
ranks the whole corpus for every judged query. BM25 runs are cached on disk as TREC run files
under ``$XDG_CACHE_HOME/harness/bm25`` (default ``~/.cache``), keyed by the corpus file's sha256,
the retrieved queries, the tokenizer and BM25 parameters, the depth and the bm25s version, so a
changed corpus or setting never reuses a stale list. The cached run is read back with
:func:`read_run`, so the first-stage order is trec_eval's (score desc, ties by doc id desc)
whether the run was just built or reused.

BM25 indexes ``title + " " + text`` (Pyserini's BEIR "flat" convention) with Lucene scoring
(``idf = ln(1 + (N - df + .5)/(df + .5))``, ``tf / (tf + k1 (1 - b + b dl/avgdl))``), the
Anserini defaults ``k1 = 0.9, b = 0.4``, lowercased ``\\w\\w+`` tokens, Lucene's 33 English
stopwords, no stemming. Only documents sharing a term with the query (score > 0) are retrieved,
as Lucene does. Every parameter is recorded in ``Dataset.notes``.

Files are streamed: the corpus is read line by line (tokens are kept, texts are not; the texts
of the retrieved candidates are read in a second pass), and qrels are parsed line by line, so
memory follows what is kept, not the file size.
"""

from __future__ import annotations

import hashlib
import json
import math
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.data.compact import RankedRun
from harness.data.formats import DataFormat
from harness.data.model import Dataset
from harness.data.trec import (
    PathLike,
    add_judgment,
    build_text_dataset,
    has_relevant,
    iter_corpus_jsonl,
    iter_json_records,
    iter_lines,
    passage_text,
    read_corpus_jsonl,
    read_run,
    record_id,
)
from harness.errors import DataFormatError, HarnessError, MissingExtraError, shorten
from harness.files import user_cache_dir, write_text_atomic

Run = RankedRun
QRELS_HEADER = ["query-id", "corpus-id", "score"]
DEFAULT_SPLIT = "test"
RUN_SUFFIXES = (".trec", ".run")
TOKEN_PATTERN = r"(?u)\b\w\w+\b"


@dataclass(frozen=True)
class BM25Config:
    """First-stage BM25 settings; all of them go into the cache key and the provenance."""

    k1: float = 0.9
    b: float = 0.4
    depth: int = 100

    def __post_init__(self) -> None:
        _check_depth(self.depth)
        numbers = all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in (self.k1, self.b)
        )
        if not (numbers and self.k1 >= 0 and 0 <= self.b <= 1):
            raise HarnessError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={self.k1}, b={self.b}")

    def describe(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "scoring": "lucene",
            "indexed_text": "title + ' ' + text",
            "tokenizer": {
                "lower": True,
                "pattern": TOKEN_PATTERN,
                "stopwords": "lucene english (33, bm25s 'en')",
                "stemmer": None,
            },
            "retrieves": "documents with score > 0, top depth, ties by doc id desc",
            "bm25s": _bm25s_version(),
        }


def _check_depth(depth: object) -> None:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise HarnessError(f"retrieval depth must be an integer >= 1, got {depth!r}")


# --- readers ---------------------------------------------------------------------------


def read_beir_qrels(path: PathLike) -> dict[str, dict[str, int]]:
    """Read BEIR qrels ``query-id<TAB>corpus-id<TAB>score``: query id -> doc id -> grade.

    Streamed line by line. The ``query-id corpus-id score`` header is skipped when it is the
    first non-blank line. A pair repeated with a different grade is an error (as in
    :func:`harness.data.trec.read_qrels`).
    """
    qrels: dict[str, dict[str, int]] = {}
    seen_data = False
    for lineno, line in iter_lines(path):
        parts = line.split()
        if not parts:
            continue
        if not seen_data and parts == QRELS_HEADER:
            seen_data = True
            continue
        seen_data = True
        if len(parts) != 3:
            raise DataFormatError(
                path, f"expected 3 fields 'query-id corpus-id score', got {len(parts)}", lineno
            )
        qid, doc_id, grade_text = parts
        add_judgment(qrels, qid, doc_id, grade_text, path, lineno)
    return qrels


def read_queries_jsonl(path: PathLike, wanted: set[str] | None = None) -> dict[str, str]:
    """Read BEIR ``queries.jsonl`` (``{"_id", "text"}`` per line): query id -> text.

    With ``wanted`` only those queries are kept (MS MARCO's file has 500k+ queries).
    """
    queries: dict[str, str] = {}
    for lineno, record in iter_json_records(path):
        qid = record_id(path, record, lineno)
        if wanted is not None and qid not in wanted:
            continue
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DataFormatError(path, f"query {shorten(qid)}: missing or empty 'text'", lineno)
        if qid in queries:
            raise DataFormatError(path, f"query {shorten(qid)} listed twice", lineno)
        queries[qid] = text.strip()
    return queries


# --- folder layout ---------------------------------------------------------------------


def is_beir_folder(folder: Path) -> bool:
    return (
        (folder / "corpus.jsonl").is_file()
        and (folder / "queries.jsonl").is_file()
        and (folder / "qrels").is_dir()
    )


def folder_run(folder: Path) -> str | None:
    """The one ``*.trec``/``*.run`` file of a BEIR folder, None if there is none."""
    runs = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in RUN_SUFFIXES)
    if len(runs) > 1:
        raise HarnessError(
            f"{folder}: several run files {runs}; write a dataset card naming one (run:)"
        )
    return runs[0] if runs else None


def beir_files(folder: Path, loader: Mapping[str, Any]) -> dict[str, Path]:
    """Paths of a BEIR card's files (``corpus``, ``queries``, ``qrels`` and maybe ``run``).

    ``split`` defaults to ``test``, or to the only ``qrels/*.tsv`` when there is no test split.
    A missing file raises :class:`HarnessError` naming it.
    """
    split = loader.get("split") or _default_split(folder)
    files = {
        "corpus": folder / "corpus.jsonl",
        "queries": folder / "queries.jsonl",
        "qrels": folder / "qrels" / f"{split}.tsv",
    }
    if loader.get("run"):
        files["run"] = folder / str(loader["run"])
    for path in files.values():
        if not path.is_file():
            raise HarnessError(f"BEIR file not found: {path}")
    return files


def _detect(folder: Path) -> dict[str, Any] | None:
    return {"run": folder_run(folder)} if is_beir_folder(folder) else None


def _default_split(folder: Path) -> str:
    splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
    if DEFAULT_SPLIT in splits or not splits:
        return DEFAULT_SPLIT
    if len(splits) == 1:
        return splits[0]
    raise HarnessError(f"{folder}/qrels: no test.tsv and several splits {splits}; set 'split:'")


# --- loader ----------------------------------------------------------------------------


def load_beir(
    corpus: PathLike,
    queries: PathLike,
    qrels: PathLike,
    run: PathLike | None = None,
    *,
    name: str,
    depth: int | None = None,
    k1: float = 0.9,
    b: float = 0.4,
    cache_dir: PathLike | None = None,
) -> Dataset:
    """A BEIR folder's split as a dataset; candidates from ``run``, else from cached BM25.

    ``depth``: how many docs BM25 retrieves per query (default 100); a given run is kept
    whole unless ``depth`` is set. Queries with no judgment are dropped, as trec_eval
    evaluates only queries present in both the run and the qrels.
    """
    judgments = read_beir_qrels(qrels)
    if run is not None:
        if depth is not None:
            _check_depth(depth)
        ranked = read_run(run).cut(depth)
        texts = read_queries_jsonl(queries, set(ranked))
        _check_run_queries(run, ranked, texts, queries)
        provenance: dict[str, Any] = {
            "first_stage": f"TREC run {Path(run).name}",
            "retrieval_depth": depth if depth is not None else "the run's (not cut)",
        }
    else:
        config = BM25Config(k1=k1, b=b, depth=100 if depth is None else depth)
        wanted = [qid for qid, judged in judgments.items() if has_relevant(judged)]
        texts = read_queries_jsonl(queries, set(wanted))
        missing = [qid for qid in wanted if qid not in texts]
        if missing:
            raise DataFormatError(
                qrels,
                f"query {shorten(missing[0])} is not in {queries}",
                _first_field_line(qrels, missing[0]),
            )
        ranked, provenance = bm25_run(
            lambda: ((d, passage_text(t, x)) for d, t, x in iter_corpus_jsonl(corpus)),
            {qid: texts[qid] for qid in wanted},
            corpus_key=f"file-sha256:{file_sha256(corpus)}",
            config=config,
            cache_dir=cache_dir,
        )
    docs = read_corpus_jsonl(corpus, ranked.doc_ids())
    if run is not None:
        _check_run_docs(run, ranked, docs, corpus)
    return build_text_dataset(
        ranked,
        texts,
        docs,
        judgments,
        name=name,
        source=f"corpus={corpus}; queries={queries}; qrels={qrels}"
        + (f"; run={run}" if run is not None else ""),
        notes=provenance,
    )


def _check_run_queries(
    run: PathLike, ranked: Run, texts: Mapping[str, str], queries: PathLike
) -> None:
    for qid in ranked:
        if qid not in texts:
            raise DataFormatError(
                run, f"query {shorten(qid)} is not in {queries}", _first_field_line(run, qid)
            )


def _check_run_docs(
    run: PathLike, ranked: Run, docs: Mapping[str, tuple[str, str]], corpus: PathLike
) -> None:
    for qid, hits in ranked.items():
        for doc_id, _ in hits:
            if doc_id not in docs:
                raise DataFormatError(
                    run,
                    f"doc {shorten(doc_id)} (query {shorten(qid)}) is not in corpus {corpus}",
                    _first_field_line(run, qid, doc_id, column=2),
                )


def _first_field_line(
    path: PathLike, qid: str, doc_id: str | None = None, *, column: int = 2
) -> int | None:
    """Line of the first record for ``qid`` (and ``doc_id`` in ``column``); error path only."""
    for lineno, line in iter_lines(path):
        parts = line.split()
        if parts and parts[0] == qid and (doc_id is None or parts[column : column + 1] == [doc_id]):
            return lineno
    return None


# --- BM25 first stage ------------------------------------------------------------------


def bm25_run(
    corpus: Callable[[], Iterable[tuple[str, str]]],
    queries: Mapping[str, str],
    *,
    corpus_key: str,
    config: BM25Config,
    cache_dir: PathLike | None = None,
) -> tuple[Run, dict[str, Any]]:
    """BM25 top-``depth`` lists for ``queries`` over ``corpus()`` (doc id, text), cached.

    ``corpus_key`` identifies the corpus content (e.g. its file hash); the cache file is
    ``<cache>/<key>.trec`` with a ``.json`` sidecar holding the corpus size. Returns the run in
    trec_eval order and the provenance for ``Dataset.notes``.
    """
    described = config.describe()
    key = _cache_key(corpus_key, queries, described)
    root = Path(cache_dir) if cache_dir is not None else bm25_cache_root()
    path, meta_path = root / f"{key}.trec", root / f"{key}.json"
    if not (path.is_file() and meta_path.is_file()):
        hits, corpus_docs = _retrieve(corpus, queries, config)
        root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, "".join(_run_lines(queries, hits)))
        write_text_atomic(meta_path, json.dumps({"corpus_docs": corpus_docs, "corpus": corpus_key}))
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return read_run(path), {
        "first_stage": f"BM25 (bm25s, lucene, k1={config.k1}, b={config.b}), top {config.depth}",
        "retrieval_depth": config.depth,
        "bm25": described,
        "corpus": corpus_key,
        "corpus_docs": meta["corpus_docs"],
        "bm25_cache": str(path),
    }


def bm25_cache_root() -> Path:
    """``$XDG_CACHE_HOME/harness/bm25`` (or ``~/.cache/harness/bm25``)."""
    return user_cache_dir("bm25")


def file_sha256(path: PathLike) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise HarnessError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def _cache_key(corpus_key: str, queries: Mapping[str, str], described: Mapping[str, Any]) -> str:
    payload = json.dumps(
        {"corpus": corpus_key, "queries": sorted(queries.items()), "bm25": described},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def _retrieve(
    corpus: Callable[[], Iterable[tuple[str, str]]],
    queries: Mapping[str, str],
    config: BM25Config,
) -> tuple[dict[str, list[tuple[str, float]]], int]:
    """Index the streamed corpus (token ids only) and score every query against all docs."""
    bm25s = _import_bm25s()
    import numpy as np
    from bm25s.tokenization import Tokenizer

    tokenizer = Tokenizer(lower=True, splitter=TOKEN_PATTERN, stopwords="en", stemmer=None)
    doc_ids: list[str] = []

    def texts() -> Iterator[str]:
        for doc_id, text in corpus():
            doc_ids.append(doc_id)
            yield text

    # array('i') keeps 4 bytes a token instead of a Python int object per token.
    tokens = [array("i", ids) for ids in tokenizer.streaming_tokenize(texts(), update_vocab=True)]
    if not tokens:
        raise HarnessError("the corpus has no documents")
    retriever = bm25s.BM25(k1=config.k1, b=config.b, method="lucene")
    retriever.index((tokens, tokenizer.get_vocab_dict()), show_progress=False)
    del tokens
    hits: dict[str, list[tuple[str, float]]] = {}
    query_tokens = tokenizer.streaming_tokenize(
        list(queries.values()), update_vocab=False, allow_empty=False
    )
    for qid, ids in zip(queries, query_tokens, strict=True):
        scores = retriever.get_scores_from_ids(ids)
        hits[qid] = _top(scores, doc_ids, config.depth, np)
    return hits, len(doc_ids)


def _top(scores: Any, names: list[str], depth: int, np: Any) -> list[tuple[str, float]]:
    """The ``depth`` best docs with score > 0, trec_eval order (score desc, doc id desc)."""
    positive = np.flatnonzero(scores > 0)
    if len(positive) > depth:
        values = scores[positive]
        kth = np.partition(values, len(values) - depth)[len(values) - depth]
        positive = positive[values >= kth]  # keeps every doc tied with the depth-th
    ranked = sorted(((float(scores[i]), names[i]) for i in positive.tolist()), reverse=True)
    return [(doc_id, score) for score, doc_id in ranked[:depth]]


def _run_lines(queries: Mapping[str, str], hits: Mapping[str, list[tuple[str, float]]]):
    for qid in queries:
        for rank, (doc_id, score) in enumerate(hits[qid], start=1):
            if any(ch.isspace() for ch in qid + doc_id):
                raise HarnessError(
                    f"query {shorten(qid, quote=True)} / doc {shorten(doc_id, quote=True)}: "
                    "ids with whitespace"
                )
            yield f"{qid} Q0 {doc_id} {rank} {score!r} bm25s\n"


def _import_bm25s() -> Any:
    try:
        import bm25s
    except ImportError:
        raise MissingExtraError("bm25s", "bm25", "a BM25 first stage") from None
    return bm25s


def _bm25s_version() -> str | None:
    try:
        return metadata.version("bm25s")
    except metadata.PackageNotFoundError:
        return None


FORMAT = DataFormat(
    name="beir",
    load=lambda r: load_beir(
        r.files["corpus"],
        r.files["queries"],
        r.files["qrels"],
        r.files.get("run"),
        name=r.name,
        **r.options,
    ),
    options=("depth", "k1", "b", "cache_dir"),
    keys=("split", "run"),
    locate=lambda r: beir_files(r.data_folder(), r.loader),
    detect=_detect,
    layout="corpus.jsonl + queries.jsonl + a qrels/ folder",
    label="BEIR folder",
)
