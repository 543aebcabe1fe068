"""Per-ranking effectiveness (nDCG, MRR, ...), one value per ranking: nDCG and MRR with NumPy,
bit for bit as ranx (the reference) computes them; the other metrics with ranx."""

from __future__ import annotations

import math
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


ENGINES = ("numpy", "ranx")
"""``effectiveness``'s engines: ``numpy`` scores nDCG and MRR (with or without a cutoff and
level) with :func:`_kernel_scores` and hands every other metric to ranx; ``ranx`` hands ranx
everything. ranx is the reference: the tests assert both give equal floats, bit for bit."""

_KERNEL_RE = re.compile(r"^(ndcg|mrr)(?:@([1-9][0-9]*))?(?:-l([1-9][0-9]*))?$")


def effectiveness(
    qrels: Mapping[str, Mapping[str, int]],
    rankings: Sequence[tuple[str, Sequence[str]]],
    metrics: Sequence[str] = (NDCG, MRR),
    *,
    relevance_level: int = 1,
    engine: str = "numpy",
) -> dict[str, np.ndarray]:
    """Score each (query_id, best-first doc ids) entry; arrays are aligned with ``rankings``.

    The same query may appear many times (once per permutation). nDCG and MRR, the metrics of
    every run's summary, are computed here with NumPy (``engine="numpy"``, the default): the
    same float operations in the same order as ranx's kernels, so the same numbers bit for bit
    (the tests compare them with ranx on random and real data), without importing ranx and
    loading its numba kernels, which took more of an ``identity`` run on DL19 than scoring did.
    The other metrics, and all of them with ``engine="ranx"``, go to ranx (``_ranx_scores``).

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
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; supported: {', '.join(ENGINES)}")
    ranx_names = {m: at_level(m, relevance_level) for m in names}
    judged = _judged(qrels, rankings)
    kernel = {m: r for m, r in ranx_names.items() if engine == "numpy" and _KERNEL_RE.match(r)}
    rest = {m: r for m, r in ranx_names.items() if m not in kernel}
    out = _kernel_scores(judged, rankings, kernel) if kernel else {}
    if rest:
        out |= _ranx_scores(qrels, rankings, rest)
    return {m: out[m] for m in names}


def _judged(
    qrels: Mapping[str, Mapping[str, int]], rankings: Sequence[tuple[str, Sequence[str]]]
) -> dict[str, dict[str, int]]:
    """Each ranked query's judgments with a positive grade, as ints (what ranx is passed);
    raises ValueError for a query without one and for a ranking that repeats a doc id."""
    judged: dict[str, dict[str, int]] = {}
    for i, (qid, docs) in enumerate(rankings):
        if qid not in judged:
            grades = qrels.get(qid)
            if not grades or max(grades.values()) <= 0:
                raise ValueError(f"query {qid!r} has no relevant judgment in qrels")
            judged[qid] = {doc: int(grade) for doc, grade in grades.items() if grade > 0}
        if len(set(docs)) != len(docs):
            raise ValueError(f"query {qid!r} (entry {i}): ranking contains a duplicate document id")
    return judged


def _kernel_scores(
    judged: Mapping[str, Mapping[str, int]],
    rankings: Sequence[tuple[str, Sequence[str]]],
    names: Mapping[str, str],
) -> dict[str, np.ndarray]:
    """nDCG and MRR (``names``: asked-for name -> ranx name) as ranx's kernels compute them.

    One [entries, depth] matrix of each ranked doc's grade (0 unjudged or past the ranking's
    end). MRR: 1 / (i + 1) at the first rank i whose grade reaches the level, else 0. nDCG:
    ranx's DCG sums grade_i / log2(i + 2) over the top k, one term after the other from rank 0
    (numba's ``np.sum`` is such a loop; a 0 term past the ranking's end adds nothing), divided
    by the ideal DCG of the query's grades >= 1 sorted down, summed the same way (1 when 0).
    """
    parsed = {}
    for name, ranx_name in names.items():
        kind, k, level = _KERNEL_RE.match(ranx_name).groups()  # type: ignore[union-attr]
        parsed[name] = (kind, int(k) if k else None, int(level) if level else 1)
    longest = max((len(docs) for _, docs in rankings), default=0)
    cutoffs = [k for _, k, _ in parsed.values() if k is not None]
    # one without a cutoff reads whole rankings
    depth = min(longest, max(cutoffs)) if cutoffs and len(cutoffs) == len(parsed) else longest
    flat: list[int] = []
    for qid, docs in rankings:
        grades = judged[qid]
        row = [grades.get(doc, 0) for doc in docs[:depth]]
        flat += row
        if len(row) < depth:
            flat += [0] * (depth - len(row))
    gains = np.array(flat, dtype=np.float64).reshape(len(rankings), depth)
    out: dict[str, np.ndarray] = {}
    for name, (kind, k, level) in parsed.items():
        top = gains[:, : depth if k is None else min(k, depth)]
        if kind == "mrr":
            hit = top >= level
            first = hit.argmax(axis=1) if top.shape[1] else np.zeros(len(top), dtype=np.int64)
            out[name] = np.where(hit.any(axis=1), 1 / (first + 1), 0.0)
            continue
        ideal = _ideal_dcgs(judged, k)
        dcg = np.zeros(len(rankings))
        for i, discount in enumerate(_discounts(top.shape[1])):
            dcg += top[:, i] / discount
        out[name] = dcg / np.array([ideal[qid] for qid, _ in rankings])
    return out


def _discounts(n: int) -> list[float]:
    """log2(i + 2) for ranks i < n: ``math.log2`` is the C library's, as in ranx's kernels."""
    return [math.log2(i + 2) for i in range(n)]


def _ideal_dcgs(judged: Mapping[str, Mapping[str, int]], k: int | None) -> dict[str, float]:
    """Each query's ideal DCG at ``k`` (None: all its relevant docs), 1.0 where it is 0."""
    ideal = {}
    for qid, grades in judged.items():
        best = sorted((g for g in grades.values() if g >= 1), reverse=True)[:k]
        total = 0.0
        for grade, discount in zip(best, _discounts(len(best)), strict=True):
            total += grade / discount
        ideal[qid] = total if total != 0.0 else 1.0
    return ideal


def _ranx_scores(
    qrels: Mapping[str, Mapping[str, int]],
    rankings: Sequence[tuple[str, Sequence[str]]],
    names: Mapping[str, str],
) -> dict[str, np.ndarray]:
    """Score with ranx (``names``: asked-for name -> ranx name); inputs already checked.

    ranx gets plain float64 arrays, not its ``Qrels``/``Run`` dictionaries: per ranking length,
    one call with a [entries, length, 2] array of (doc code, n - rank) rows and one of each
    entry's relevant judgments (built once per query, padded with grade-0 rows). Its kernels
    are compiled for those array types once per machine (``compile_kernels``, at set-up), so no
    dataset (doc ids, their lengths, list sizes) makes a run compile again; and no numba typed
    container is built, whose methods numba would compile again in every new process.
    """
    codes = DocCodes()
    relevant: dict[str, np.ndarray] = {}  # per query, built once
    by_length: dict[int, list[int]] = {}  # ranking length -> its entries
    coded: list[list[int]] = []
    for i, (qid, docs) in enumerate(rankings):
        if qid not in relevant:
            relevant[qid] = _relevant_rows(qid, qrels.get(qid), codes)
        coded.append([codes(doc) for doc in docs])
        if docs:  # an empty ranking scores 0 in every supported metric
            by_length.setdefault(len(docs), []).append(i)
    out = {m: np.zeros(len(rankings)) for m in names}
    if not by_length:
        return out

    os.environ.setdefault("NUMBA_CACHE_DIR", _numba_cache_dir())
    from ranx import evaluate

    # ranx's evaluate, asked for one "name@k" without means, looks it up by its bare name
    # (KeyError): it always gets a list of at least two.
    requested = list(dict.fromkeys(names.values()))
    requested = requested if len(requested) > 1 else requested * 2
    for length, rows in by_length.items():
        run = np.empty((len(rows), length, 2))
        run[:, :, 0] = [coded[i] for i in rows]
        run[:, :, 1] = np.arange(length, 0, -1)  # strictly decreasing: the ranking decides
        truth = _stack([relevant[rankings[i][0]] for i in rows])
        scores = evaluate(truth, run, requested, return_mean=False, save_results_in_run=False)
        for m, ranx_name in names.items():
            out[m][rows] = scores[ranx_name]
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
    (``scripts/setup.sh`` calls this), so no ranx metric compiles before its first number."""
    import warnings

    qrels = {"q": {"a": 1, "b": 0}}
    with warnings.catch_warnings():  # ranx's own uint64 cast notice, printed while compiling
        warnings.simplefilter("ignore")
        rankings = [("q", ["a", "b"]), ("q", ["b", "a"])]
        effectiveness(qrels, rankings, metrics=(NDCG, MRR), engine="ranx")
