"""The metric registry: one entry per metric, and every consumer agrees with it."""

from __future__ import annotations

import pytest

from harness.config import RunConfig
from harness.data.model import Candidate, CandidateSet, TextQuery
from harness.errors import HarnessError
from harness.metrics import registry
from harness.permutations import plan_permutations
from harness.results.markdown import render_summary
from harness.results.store import Sample
from harness.results.summary import summarize
from harness.runner import execute_run, prepare_run


def _summarize(strategy: str = "random") -> dict:
    """An identity reranker (output = shown order) on two queries of 12 candidates."""
    sets, samples = [], {}
    for q in range(2):
        qid = f"q{q}"
        cands = tuple(Candidate(f"{qid}d{i}", f"text {i}", float(-i)) for i in range(12))
        sets.append(CandidateSet(qid, TextQuery(f"query {q}"), cands))
        plan = plan_permutations(strategy, qid, len(cands), perms=4, seed=0)
        for row, (order, label) in enumerate(zip(plan.orders, plan.labels, strict=True)):
            ranking = tuple(cands[i].doc_id for i in order)
            samples[(qid, row)] = Sample(
                qid, row, label, tuple(int(i) for i in order), ranking, None, {"latency_ms": 5.0}
            )
    qrels = {c.query_id: {c.doc_ids[0]: 2, c.doc_ids[5]: 1} for c in sets}
    return summarize(sets, qrels, samples, seed=0)


@pytest.fixture(scope="module")
def summarized() -> dict:
    return _summarize()


def test_names_are_unique():
    names = [spec.name for spec in registry.METRICS]
    assert len(names) == len(set(names))


def test_every_per_query_value_summarize_emits_is_registered_in_registry_order(summarized):
    expected = [spec.name for spec in registry.per_query()]
    for row in summarized["per_query"].values():
        assert list(row) == expected


def test_summary_holds_exactly_the_summarized_entries_with_their_aggregation(summarized):
    summary = summarized["summary"]
    assert list(summary) == [spec.name for spec in registry.summarized()]
    for spec in registry.summarized():
        assert summary[spec.name]["aggregate"] == spec.summary


def test_per_order_holds_every_order_of_each_per_order_metric(summarized):
    names = [spec.name for spec in registry.per_order()]
    assert names == [registry.NDCG, registry.MRR]
    for qid, orders in summarized["per_order"].items():
        row = orders.to_dict()
        assert list(row) == ["order_index", *names]
        assert row["order_index"] == list(range(5))  # the reference row 0 included
        for name in names:
            assert len(row[name]) == 5
        # the identity reranker copies the first-stage order in row 0
        assert row[registry.NDCG][0] == summarized["per_query"][qid][registry.NDCG_REFERENCE]


def test_headline_order_is_unchanged():
    assert [spec.name for spec in registry.headline()] == [
        "ndcg@10",
        "mrr@10",
        "ndcg@10_range",
        "ndcg@10_first_stage",
        "kendall_tau",
        "rbo@10",
        "top1_agreement",
        "ppi",
        "gpi",
        "position_bias_mad",
        "copy_tau",
        "latency_per_set_ms",
        "invalid_share",  # validity: orders whose answer stayed invalid (harness.validity)
        "latency_ms_p50",
        "latency_ms_p95",
    ]


def test_summary_markdown_lists_the_headline_metrics_in_order(rankgpt_folder, tmp_path):
    config = RunConfig(
        reranker="identity", dataset=str(rankgpt_folder), perms=4, out=str(tmp_path / "run")
    )
    lines = render_summary(execute_run(prepare_run(config.validate()))).splitlines()
    table = lines[lines.index("|---|---:|---:|---|") + 1 :]
    rows = [line.split(" | ")[0].removeprefix("| ") for line in table if line.startswith("|")]
    assert rows == [registry.label(spec.name, 1) for spec in registry.headline()]
    assert "mrr@10 (rel ≥ 1)" in rows  # a binary metric says which grades count as relevant


def test_roles_and_directions():
    assert [s.name for s in registry.compared()] == ["ndcg@10", "mrr@10", "kendall_tau", "rbo@10"]
    assert [(s.name, s.gate_margin) for s in registry.default_gates()] == [
        ("ndcg@10", 0.01),
        ("kendall_tau", 0.02),
        ("rbo@10", 0.02),
    ]
    assert registry.get("distinct_rankings").lower_is_better
    assert registry.get("ndcg@10_reference").higher_is_better
    assert {s.name for s in registry.descriptive()} == {
        "n_candidates", "n_orders", "ndcg@10_first_stage", "copy_tau",
    }  # fmt: skip
    for spec in registry.METRICS:  # compared and gated metrics need a direction and per-query data
        if spec.compared or spec.gate_margin is not None:
            assert spec.has_direction and spec.per_query
        if spec.per_order:
            assert spec.per_query


def test_names_are_built_from_the_cutoff():
    assert registry.TOP_K == 10
    assert registry.at_k("ndcg") == registry.NDCG == "ndcg@10"
    assert registry.TOPK_JACCARD == "top10_jaccard"
    assert registry.latency_percentile(95) == "latency_ms_p95"


def test_unknown_name_is_a_one_line_error_listing_known_names():
    with pytest.raises(HarnessError) as err:
        registry.get("ndcg@5")
    message = str(err.value)
    assert "\n" not in message
    assert "unknown metric 'ndcg@5'" in message and "kendall_tau" in message


def test_latency_per_set_sums_the_orders_where_the_median_hides_reuse():
    """A reranker that pays for a set on its first order (pointwise reuses the scores): the
    per-order median is the reused orders' near-zero, the per-set cost is the sum."""
    cands = tuple(Candidate(f"d{i}", f"text {i}", float(-i)) for i in range(6))
    cset = CandidateSet("q", TextQuery("query"), cands)
    plan = plan_permutations("random", "q", len(cands), perms=4, seed=0)
    latencies = [900.0, 1.0, 2.0, 1.0, 3.0]  # the first order computes, the others reuse
    samples = {
        ("q", row): Sample(
            "q", row, label, tuple(int(i) for i in order),
            tuple(cands[i].doc_id for i in order), None, {"latency_ms": latency},
        )
        for row, (order, label, latency) in enumerate(
            zip(plan.orders, plan.labels, latencies, strict=True)
        )
    }  # fmt: skip
    values = summarize([cset], {"q": {"d0": 1}}, samples, seed=0)["per_query"]["q"]
    assert values[registry.LATENCY_MS] == 2.0
    assert values[registry.LATENCY_PER_SET_MS] == 907.0
