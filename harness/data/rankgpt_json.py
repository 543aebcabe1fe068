"""Loader for the RankGPT / early rank_llm candidate file: one JSON list of
``{"query": str, "hits": [{"content", "qid", "docid", "rank", "score"}, ...]}``.

Decisions, so that a file means one thing only:

- Order: the hits' order in the file *is* the first-stage order; ``rank`` must strictly
  increase along it. A file whose ranks disagree with its order is rejected rather than
  silently re-sorted, since either reading could be the intended one.
- ``qid``/``docid`` may be JSON strings or integers (rank_llm writes integer qids); both
  become strings. All hits of an entry must carry the same qid, and a qid may not repeat.
- An entry with no hits has no qid, so nothing can be judged: it is skipped and counted in
  ``notes["skipped_empty_queries"]``.
- Entries whose qid has no relevant (grade > 0) judgment in the qrels are dropped (trec_eval
  skips them; nDCG is undefined) and counted in ``notes["dropped_unjudged_queries"]``.

The file is a single JSON document, so it is parsed whole; a syntax error reports the line
from the JSON parser, and a structural error names the entry (0-based) and its qid.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from harness.data.fingerprint import build_dataset
from harness.data.formats import DataFormat
from harness.data.model import Candidate, CandidateSet, Dataset, TextQuery
from harness.data.trec import PathLike, has_relevant, one_qrels, read_qrels
from harness.errors import DataFormatError, HarnessError, shorten

HIT_KEYS = ("content", "qid", "docid", "rank", "score")


def load_rankgpt_json(run_path: PathLike, qrels_path: PathLike, *, name: str) -> Dataset:
    """Load a RankGPT-format candidate file plus TREC qrels as a text-ranking dataset."""
    entries = _read_json(run_path)
    if not isinstance(entries, list):
        raise DataFormatError(run_path, "expected a JSON list of {query, hits} objects", 1)
    qrels = read_qrels(qrels_path)

    sets: list[CandidateSet] = []
    seen_qids: dict[str, int] = {}
    skipped_empty = dropped_unjudged = 0
    for index, entry in enumerate(entries):
        cset = _parse_entry(run_path, index, entry)
        if cset is None:
            skipped_empty += 1
            continue
        if cset.query_id in seen_qids:
            raise DataFormatError(
                run_path,
                f"entries[{index}]: query {shorten(cset.query_id)} already listed in "
                f"entries[{seen_qids[cset.query_id]}]",
            )
        seen_qids[cset.query_id] = index
        if not has_relevant(qrels.get(cset.query_id)):
            dropped_unjudged += 1
            continue
        sets.append(cset)

    return build_dataset(
        name=name,
        task="text-ranking",
        sets=sets,
        qrels={s.query_id: qrels[s.query_id] for s in sets},
        source=f"run={run_path}; qrels={qrels_path}",
        notes={
            "queries_in_file": len(entries),
            "skipped_empty_queries": skipped_empty,
            "dropped_unjudged_queries": dropped_unjudged,
            "run_order": "file order (rank ascending)",
        },
    )


def _read_json(path: PathLike) -> Any:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise HarnessError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(path, "not valid UTF-8 text", line) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"invalid JSON: {exc.msg}", exc.lineno) from None


def _parse_entry(path: PathLike, index: int, entry: Any) -> CandidateSet | None:
    """One ``{query, hits}`` object -> a candidate set, or None when it has no hits."""
    where = f"entries[{index}]"
    if not isinstance(entry, dict):
        raise DataFormatError(path, f"{where}: expected an object with 'query' and 'hits'")
    for key in ("query", "hits"):
        if key not in entry:
            raise DataFormatError(path, f"{where}: missing key '{key}'")
    query, hits = entry["query"], entry["hits"]
    if not isinstance(query, str) or not query.strip():
        raise DataFormatError(path, f"{where}: 'query' must be a non-empty string")
    if not isinstance(hits, list):
        raise DataFormatError(path, f"{where}: 'hits' must be a list")
    if not hits:
        return None

    qid: str | None = None
    last_rank: int | None = None
    candidates: list[Candidate] = []
    seen_docs: set[str] = set()
    for hit_index, hit in enumerate(hits):
        hit_where = f"{where}.hits[{hit_index}]"
        if not isinstance(hit, dict):
            raise DataFormatError(path, f"{hit_where}: expected an object")
        label = qid if qid is not None else hit.get("qid")
        if label is not None:
            hit_where += f" (query {shorten(label)})"
        for key in HIT_KEYS:
            if key not in hit:
                raise DataFormatError(path, f"{hit_where}: missing key '{key}'")
        hit_qid = _as_id(path, hit_where, "qid", hit["qid"])
        if qid is None:
            qid = hit_qid
        elif hit_qid != qid:
            raise DataFormatError(
                path, f"{hit_where}: qid {shorten(hit_qid)} differs from {shorten(qid)}"
            )
        doc_id = _as_id(path, hit_where, "docid", hit["docid"])
        if doc_id in seen_docs:
            raise DataFormatError(
                path, f"{where}: query {shorten(qid)} lists doc {shorten(doc_id)} twice"
            )
        seen_docs.add(doc_id)
        rank, score, content = hit["rank"], hit["score"], hit["content"]
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise DataFormatError(path, f"{hit_where}: 'rank' must be an integer")
        if last_rank is not None and rank <= last_rank:
            raise DataFormatError(
                path, f"{hit_where}: rank {rank} after rank {last_rank}; hits must be in rank order"
            )
        last_rank = rank
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise DataFormatError(path, f"{hit_where}: 'score' must be a number")
        if not math.isfinite(score):
            raise DataFormatError(path, f"{hit_where}: 'score' is not finite")
        if not isinstance(content, str):
            raise DataFormatError(path, f"{hit_where}: 'content' must be a string")
        candidates.append(Candidate(doc_id=doc_id, text=content, first_stage_score=float(score)))

    assert qid is not None  # hits is non-empty
    return CandidateSet(query_id=qid, query=TextQuery(query.strip()), candidates=tuple(candidates))


def _as_id(path: PathLike, where: str, key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise DataFormatError(path, f"{where}: '{key}' must be a non-empty string or integer")
    return str(value)


def _detect(folder: Path) -> dict[str, Any] | None:
    """A folder with one ``*.json`` file is this format's; it then needs one ``qrels*``."""
    jsons = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(".json"))
    if len(jsons) != 1:
        return None
    return {"run": jsons[0], "qrels": one_qrels(folder)}


FORMAT = DataFormat(
    name="rankgpt-json",
    load=lambda r: load_rankgpt_json(r.files["run"], r.files["qrels"], name=r.name),
    files=("run", "qrels"),
    detect=_detect,
    layout="one *.json candidate file + one qrels* file",
)
