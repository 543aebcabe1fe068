"""Per-ranking effectiveness (nDCG, MRR, ...) computed with ranx, one value per ranking."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import numpy as np

from harness.files import user_cache_dir
from harness.metrics.registry import MRR, NDCG

SUPPORTED = (
    "ndcg@k",
    "mrr@k",
    "recall@k",
    "precision@k",
    "map@k",
    "mrr@k-lN",
    "recall@k-lN",
    "precision@k-lN",
    "map@k-lN",
)
"""Metric names accepted; the "@k" cutoff is optional for each (no cutoff = whole ranking).

A document is relevant when its grade is >= 1 (trec_eval's default, ``-l1``); the binary
metrics also take ranx's ``-lN`` suffix to count only grades >= N as relevant, e.g.
``mrr@10-l2`` for MS MARCO's convention (passages judged 2 or 3 are relevant)."""

_METRIC_RE = re.compile(
    r"^((ndcg|mrr|recall|precision|map)(@[1-9][0-9]*)?"
    r"|(mrr|recall|precision|map)(@[1-9][0-9]*)?-l[1-9][0-9]*)$"
)


def check_metric(name: str) -> str:
    """Return ``name`` if it is a supported metric, else raise a ValueError listing the options.

    Only this allowlist is passed to ranx, so e.g. ``ndcg_burges`` (2^grade - 1 gain) cannot slip
    in and silently change the gain definition.
    """
    if not _METRIC_RE.match(name):
        raise ValueError(f"unknown metric {name!r}; supported: {', '.join(SUPPORTED)}")
    return name


class DocCodes:
    """Doc ids as consecutive integer codes (one per distinct id of a call): ranx is handed
    them as float64 ids (exact up to 2^53). Metrics compare ids only for equality, so a
    one-to-one code changes no number (ranx's own string path hashes the ids instead)."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {}

    def __call__(self, doc: str) -> int:
        code = self._codes.get(doc)
        if code is None:
            code = self._codes[doc] = len(self._codes)
        return code


PADDING = -1.0  # the doc code of rows that pad judgment arrays to one length (grade 0)


def _numba_cache_dir() -> str:
    return str(user_cache_dir("numba"))


def at_level(name: str, relevance_level: int) -> str:
    """The ranx name of ``name`` with grades >= ``relevance_level`` relevant: a binary metric
    without its own ``-lN`` gets ``-l{relevance_level}`` (``mrr@10`` -> ``mrr@10-l2``); nDCG,
    whose gain is the grade, and names with a level of their own are left as they are."""
    if relevance_level < 1:
        raise ValueError(f"relevance level must be at least 1, got {relevance_level}")
    binary = name.split("@")[0].split("-")[0] in _BINARY
    if not binary or "-l" in name or relevance_level == 1:
        return name
    return f"{name}-l{relevance_level}"


_BINARY = ("mrr", "recall", "precision", "map")


def effectiveness(
    qrels: Mapping[str, Mapping[str, int]],
    rankings: Sequence[tuple[str, Sequence[str]]],
    metrics: Sequence[str] = (NDCG, MRR),
    *,
    relevance_level: int = 1,
) -> dict[str, np.ndarray]:
    """Score each (query_id, best-first doc ids) entry; arrays are aligned with ``rankings``.

    The same query may appear many times (once per permutation). ranx gets plain float64
    arrays, not its ``Qrels``/``Run`` dictionaries: per ranking length, one call with a
    [entries, length, 2] array of (doc code, n - rank) rows and one of each entry's relevant
    judgments (built once per query, padded with grade-0 rows). Its kernels are compiled for
    those array types once per machine (``compile_kernels``, at set-up), so no dataset (doc
    ids, their lengths, list sizes) makes a run compile again; and no numba typed container
    is built, whose methods numba would compile again in every new process.

    Grades are the gain (trec_eval / ranx ``ndcg``); for the binary metrics (MRR, recall,
    precision, MAP) a doc is relevant when its grade >= ``relevance_level`` (trec_eval's
    ``-l``; 1 by default), or the metric's own ``-lN``; the result keeps the name asked for
    (``mrr@10`` at level 2 is ranx's ``mrr@10-l2``). Retrieved docs missing from the qrels
    count as non-relevant;
    the ideal DCG uses all judged docs of the query (only grades >= 1 are passed: no
    supported metric counts the others).

    Raises ValueError naming the query when it has no judgments or no relevant (grade > 0)
    judgment: trec_eval skips such queries and ranx would silently score them 0, so the caller
    must filter them explicitly. Call from the main thread (ranx sets numba's threading layer).
    """
    names = list(dict.fromkeys(check_metric(m) for m in metrics))
    if not names:
        raise ValueError("no metrics requested")
    ranx_names = {m: at_level(m, relevance_level) for m in names}
    codes = DocCodes()
    relevant: dict[str, np.ndarray] = {}  # per query, built once
    by_length: dict[int, list[int]] = {}  # ranking length -> its entries
    coded: list[list[int]] = []
    for i, (qid, docs) in enumerate(rankings):
        if qid not in relevant:
            relevant[qid] = _relevant_rows(qid, qrels.get(qid), codes)
        ids = [codes(doc) for doc in docs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"query {qid!r} (entry {i}): ranking contains a duplicate document id")
        coded.append(ids)
        if ids:  # an empty ranking scores 0 in every supported metric
            by_length.setdefault(len(ids), []).append(i)
    out = {m: np.zeros(len(rankings)) for m in names}
    if not by_length:
        return out

    os.environ.setdefault("NUMBA_CACHE_DIR", _numba_cache_dir())
    from ranx import evaluate

    # ranx's evaluate, asked for one "name@k" without means, looks it up by its bare name
    # (KeyError): it always gets a list of at least two.
    requested = list(dict.fromkeys(ranx_names.values()))
    requested = requested if len(requested) > 1 else requested * 2
    for length, rows in by_length.items():
        run = np.empty((len(rows), length, 2))
        run[:, :, 0] = [coded[i] for i in rows]
        run[:, :, 1] = np.arange(length, 0, -1)  # strictly decreasing: the ranking decides
        truth = _stack([relevant[rankings[i][0]] for i in rows])
        scores = evaluate(truth, run, requested, return_mean=False, save_results_in_run=False)
        for m in names:
            out[m][rows] = scores[ranx_names[m]]
    return out


def _relevant_rows(qid: str, grades: Mapping[str, int] | None, codes: DocCodes) -> np.ndarray:
    """[relevant docs, 2] rows (code, grade), highest grade first (ranx's ideal ranking)."""
    if not grades or max(grades.values()) <= 0:
        raise ValueError(f"query {qid!r} has no relevant judgment in qrels")
    rows = sorted(((int(g), codes(d)) for d, g in grades.items() if g > 0), reverse=True)
    return np.array([(code, grade) for grade, code in rows], dtype=np.float64)


def _stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """One [entries, longest, 2] array, shorter ones padded with (PADDING, 0) rows, which no
    metric counts (ranx drops rows below the relevance level; an ideal DCG gains 0 there)."""
    stacked = np.zeros((len(arrays), max(len(a) for a in arrays), 2))
    stacked[:, :, 0] = PADDING
    for row, array in enumerate(arrays):
        stacked[row, : len(array)] = array
    return stacked


def compile_kernels() -> None:
    """Compile ranx's numba kernels for ``effectiveness``'s array types into the cache now
    (``scripts/setup.sh`` calls this), so no run compiles before its first number."""
    import warnings

    qrels = {"q": {"a": 1, "b": 0}}
    with warnings.catch_warnings():  # ranx's own uint64 cast notice, printed while compiling
        warnings.simplefilter("ignore")
        effectiveness(qrels, [("q", ["a", "b"]), ("q", ["b", "a"])], metrics=(NDCG, MRR))
