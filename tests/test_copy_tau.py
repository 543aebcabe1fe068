"""copy_tau (agreement of the output with the shown order) and the first stage's own nDCG@10,
each against a textbook case."""

from __future__ import annotations

import pytest

from harness.data.model import Candidate, CandidateSet, TextQuery
from harness.permutations import OrderLabel
from harness.results.store import Sample
from harness.results.summary import summarize


def _set() -> CandidateSet:
    candidates = tuple(Candidate(d, f"text {d}", 4.0 - i) for i, d in enumerate("abcd"))
    return CandidateSet("q", TextQuery("query"), candidates)


def _sample(index: int, label: str, shown: tuple[int, ...], ranking: str) -> Sample:
    facts = {"latency_ms": 1.0}
    return Sample("q", index, OrderLabel.parse(label), shown, tuple(ranking), None, facts)


def test_copy_tau_is_kendall_tau_of_output_against_shown_order():
    """Shown b,a,c,d and output b,c,a,d: one discordant pair (a, c) of six, tau = (5-1)/6;
    shown d,c,b,a and output a,b,c,d: the output reverses it, tau = -1. The reference order
    (output a,b,c,d shown a,b,c,d, tau 1) is not part of the design and does not count."""
    samples = {
        (s.query_id, s.order_index): s
        for s in (
            _sample(0, "reference", (0, 1, 2, 3), "abcd"),
            _sample(1, "random:0", (1, 0, 2, 3), "bcad"),
            _sample(2, "random:1", (3, 2, 1, 0), "abcd"),
        )
    }
    row = summarize([_set()], {"q": {"a": 1}}, samples, seed=0)["per_query"]["q"]
    assert row["copy_tau"] == pytest.approx(((5 - 1) / 6 + -1.0) / 2)


def test_first_stage_ndcg_is_the_loaded_order_whatever_the_reranker_did():
    """Relevant c (grade 1) at first-stage rank 3: nDCG@10 = (1/log2(4)) / (1/log2(2)) = 0.5,
    while the reranker put c first (its own nDCG@10 is 1)."""
    samples = {("q", 0): _sample(0, "identity", (0, 1, 2, 3), "cabd")}
    row = summarize([_set()], {"q": {"c": 1}}, samples, seed=0)["per_query"]["q"]
    assert row["ndcg@10_first_stage"] == pytest.approx(0.5)
    assert row["ndcg@10"] == pytest.approx(1.0)


def test_dl19_first_stage_ndcg_is_the_published_bm25_figure(dl19_dir, tmp_path):
    """Any reranker's run shows BM25's own nDCG@10 on DL19: 0.5058 (trec_eval)."""
    import harness

    run = harness.evaluate("identity", dataset="msmarco-dl19", strategy="identity", out=tmp_path)
    assert run.summary.loc["ndcg@10_first_stage", "value"] == pytest.approx(0.5058, abs=5e-5)
    assert run.summary.loc["copy_tau", "value"] == pytest.approx(1.0)  # identity copies
