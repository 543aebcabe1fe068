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


def ranking_scores(docs: Sequence[str]) -> dict[str, float]:
    """Map a best-first ranking to strictly decreasing scores (n - rank).

    ranx orders tied scores by insertion order; distinct scores make the ranking itself, not the
    dict's order, decide the metric, so no input order can leak in.
    """
    n = len(docs)
    scores = {doc: float(n - rank) for rank, doc in enumerate(docs)}
    if len(scores) != n:
        raise ValueError("ranking contains a duplicate document id")
    return scores


class DocCodes:
    """Doc ids as fixed-width codes (``CODE_WIDTH`` hex digits, one per distinct id).

    ranx stores doc ids in NumPy string arrays whose dtype is the longest id's length, and
    numba compiles its kernels once per dtype: 17-29 s for every new longest-id length, i.e.
    per dataset. Codes of one width make every dataset hit the kernels compiled at set-up.
    Metrics compare ids only for equality, so a one-to-one code changes no number.
    """

    def __init__(self) -> None:
        self._codes: dict[str, str] = {}

    def __call__(self, doc: str) -> str:
        code = self._codes.get(doc)
        if code is None:
            code = self._codes[doc] = f"{len(self._codes):0{CODE_WIDTH}x}"
        return code


CODE_WIDTH = 12  # hex digits: room for 2^48 distinct doc ids in one call


def _numba_cache_dir() -> str:
    return str(user_cache_dir("numba"))


def effectiveness(
    qrels: Mapping[str, Mapping[str, int]],
    rankings: Sequence[tuple[str, Sequence[str]]],
    metrics: Sequence[str] = (NDCG, MRR),
) -> dict[str, np.ndarray]:
    """Score each (query_id, best-first doc ids) entry; arrays are aligned with ``rankings``.

    The same query may appear many times (once per permutation), so every entry gets its own
    key in a single ranx Run (one JIT-compiled call, not one per entry). Grades are the gain
    (trec_eval / ranx ``ndcg``); a doc is relevant when its grade >= 1; retrieved docs missing
    from the qrels count as non-relevant; the ideal DCG uses all judged docs of the query.

    Raises ValueError naming the query when it has no judgments or no relevant (grade > 0)
    judgment: trec_eval skips such queries and ranx would silently score them 0, so the caller
    must filter them explicitly. Call from the main thread (ranx sets numba's threading layer).
    """
    names = list(dict.fromkeys(check_metric(m) for m in metrics))
    if not names:
        raise ValueError("no metrics requested")
    run: dict[str, dict[str, float]] = {}
    judged: dict[str, dict[str, int]] = {}
    rows: list[int] = []
    codes = DocCodes()
    coded: dict[str, dict[str, int]] = {}  # a query's judgments under their codes, built once
    for i, (qid, docs) in enumerate(rankings):
        grades = qrels.get(qid)
        if not grades or max(grades.values()) <= 0:
            raise ValueError(f"query {qid!r} has no relevant judgment in qrels")
        if not docs:  # every supported metric is 0; ranx cannot build an all-empty Run
            continue
        key = f"{qid}\x1f{i}"
        try:
            run[key] = ranking_scores([codes(doc) for doc in docs])
        except ValueError as err:
            raise ValueError(f"query {qid!r} (entry {i}): {err}") from None
        if qid not in coded:
            coded[qid] = {codes(doc): int(g) for doc, g in grades.items()}
        judged[key] = coded[qid]
        rows.append(i)
    out = {m: np.zeros(len(rankings)) for m in names}
    if not run:
        return out

    os.environ.setdefault("NUMBA_CACHE_DIR", _numba_cache_dir())
    from ranx import Qrels, Run, evaluate

    ranx_run = Run(run)
    evaluate(Qrels(judged), ranx_run, names, return_mean=False, save_results_in_run=True)
    # ranx sorts query ids internally, so realign by key rather than trusting array order.
    for m in names:
        out[m][rows] = [ranx_run.scores[m][key] for key in run]
    return out


def compile_kernels() -> None:
    """Compile ranx's numba kernels into the cache now (``scripts/setup.sh`` calls this), so
    a fresh machine's first run does not spend ~40 s compiling before its first number."""
    import warnings

    qrels = {"q": {"a": 1, "b": 0}}
    with warnings.catch_warnings():  # ranx's own uint64 cast notice, printed while compiling
        warnings.simplefilter("ignore")
        effectiveness(qrels, [("q", ["a", "b"]), ("q", ["b", "a"])], metrics=(NDCG, MRR))
