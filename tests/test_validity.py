"""Invalid answers as a validity metric (harness/validity.py): how the summary counts and
leaves them out, the bound on a run, the gate's rule, and run folders and baselines recorded
before the metric existed. The HTTP backend's side (retries, never cached, a fake server's
invalid answers below and above the bound) is in tests/test_openai_backend.py."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.config import RunConfig, merge_config
from harness.errors import HarnessError
from harness.gates.baseline import Baseline, baseline_from_results
from harness.gates.gate import evaluate_gate, render_verdict
from harness.gates.outputs import verdict_dict, verdict_junit, verdict_markdown
from harness.metrics import registry
from harness.rerankers.base import RerankOutput
from harness.rerankers.registry import build_reranker
from harness.results.markdown import render_summary
from harness.results.store import RESULTS_FILE, SAMPLES_FILE, read_results
from harness.runner import execute_run, prepare_run
from harness.validity import gate_allows, too_many_invalid
from tests.conftest import write_rankgpt_folder

cli = CliRunner()


# --- the rules ---------------------------------------------------------------------------------


def test_the_bound_is_decided_only_once_the_count_exceeds_the_share_of_all_orders():
    assert not too_many_invalid(1, 20, 0.05)  # 1 of 20 is exactly 5%: allowed
    assert too_many_invalid(2, 20, 0.05)
    assert too_many_invalid(1, 20, 0.0) and not too_many_invalid(0, 20, 0.0)
    assert not too_many_invalid(20, 20, 1.0)


@pytest.mark.parametrize(
    ("baseline", "new", "allowed"),
    [
        (0.0, 0.0, True),
        (0.0, 1e-9, False),  # a baseline with none allows none
        (0.05, 0.05, True),
        (0.05, 0.0, True),  # a fall passes
        (0.05, 0.06, True),  # within the margin of 0.01
        (0.05, 0.0601, False),
    ],
)
def test_gate_rule(baseline, new, allowed):
    assert gate_allows(baseline, new) is allowed


def test_max_invalid_share_is_checked_and_read_from_a_config_file(tmp_path):
    for bad in (-0.1, 1.5):
        with pytest.raises(HarnessError, match="--max-invalid-share must be between 0 and 1"):
            RunConfig(reranker="identity", max_invalid_share=bad).validate()
    path = tmp_path / "run.yaml"
    path.write_text("reranker: identity\nmax-invalid-share: 0.2\n", encoding="utf-8")
    assert merge_config(path, {}).max_invalid_share == 0.2
    path.write_text("reranker: identity\nmax_invalid_share: lots\n", encoding="utf-8")
    with pytest.raises(HarnessError, match="'max_invalid_share' must be a number"):
        merge_config(path, {})


# --- runs with invalid orders (a control reranker, its answers marked invalid) ---------------


def _marks_invalid(query_ids: set[str], orders: set[tuple[str, int]] = frozenset()):
    """first-stage, with every order of ``query_ids`` and the ``orders`` (query, row of the
    call's first order + k) marked as a backend marks an answer that stayed invalid."""

    def factory(preset, context):
        reranker = build_reranker(preset, context)
        original = reranker.rerank

        def rerank(cset, shown):
            outputs = original(cset, shown)
            marked = []
            for order, output in zip(shown, outputs, strict=True):
                key = (cset.query_id, tuple(int(i) for i in order))
                if cset.query_id in query_ids or key in orders:
                    extra = {**output.facts.extra, "invalid_answers": 1}
                    extra["invalid_answer"] = "invalid answer from test: no top_logprobs"
                    output = RerankOutput(
                        output.ranking, replace(output.facts, extra=extra), output.scores
                    )
                marked.append(output)
            return marked

        reranker.rerank = rerank
        return reranker

    return factory


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_rankgpt_folder(tmp_path_factory.mktemp("validity") / "data", candidates=12)


def _config(data: Path, out: Path, **overrides) -> RunConfig:
    settings = {"perms": 4, **overrides}
    return RunConfig(reranker="first-stage", dataset=str(data), out=str(out), **settings).validate()


def test_invalid_orders_are_counted_exactly_and_left_out_of_every_other_metric(data, tmp_path):
    first = tuple(range(12))  # q1's order 0: the identity order (the reference)
    config = _config(data, tmp_path / "run", max_invalid_share=0.3)
    results = execute_run(
        prepare_run(config), reranker_factory=_marks_invalid({"q0"}, {("q1", first)})
    )
    total = 4 * 5  # 4 queries x (4 random orders + the reference)
    assert results.counts["samples"] == total and results.counts["invalid_orders"] == 6
    assert results.summary_value(registry.INVALID_SHARE) == 6 / total
    q0, q1 = results.per_query["q0"], results.per_query["q1"]
    assert q0[registry.INVALID_SHARE] == 1.0 and q0[registry.N_ORDERS] == 0
    assert math.isnan(q0[registry.NDCG]) and math.isnan(q0[registry.KENDALL_TAU])
    assert not math.isnan(q0[registry.NDCG_FIRST_STAGE])  # needs no reranked order
    assert results.undefined[registry.NDCG] == {registry.UNDEFINED_ALL_INVALID: 1}
    assert q1[registry.INVALID_SHARE] == 1 / 5 and q1[registry.N_ORDERS] == 4
    assert math.isnan(q1[registry.NDCG_REFERENCE])  # the reference order was invalid
    assert results.per_order["q1"].order_index == (1, 2, 3, 4)  # its valid orders only
    assert "q0" not in results.per_order
    summary = render_summary(results)
    assert "| invalid_share | 0.3000 |" in summary and "6 of 20 orders (30.00%)" in summary


def test_a_run_past_the_bound_stops_keeps_its_orders_and_a_rerun_asks_the_invalid_again(
    data, tmp_path
):
    config = _config(data, tmp_path / "run", batch_size=5)
    with pytest.raises(HarnessError) as error:
        execute_run(prepare_run(config), reranker_factory=_marks_invalid({"q1"}))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("5 of 20 orders got invalid answers, more than --max-invalid-share")
    assert "(first: query 'q1', order 0: invalid answer from test" in message
    lines = (tmp_path / "run" / SAMPLES_FILE).read_text().splitlines()
    assert len(lines) == 10  # q0's and q1's orders: every finished order kept
    results = execute_run(prepare_run(config))  # a fixed reranker: q1 asked again
    assert results.summary_value(registry.INVALID_SHARE) == 0.0
    assert len((tmp_path / "run" / SAMPLES_FILE).read_text().splitlines()) == 25


# --- the gate, and what was recorded before the metric -----------------------------------------


def _baseline(share: float | None) -> Baseline:
    ids = tuple(f"q{i}" for i in range(6))
    return Baseline(
        query_ids=ids,
        per_query={m: (0.5,) * 6 for m in ("kendall_tau", "ndcg@10", "rbo@10")},
        reranker={"name": "r"},
        dataset={"name": "d", "fingerprint": "f", "depth": None},
        permutations={"strategy": "random", "random_orders": 5, "seed": 0, "total_orders": 30},
        config_hash="c",
        invalid_share=share,
    )


@pytest.mark.parametrize(
    ("old", "new", "passed"),
    [(0.1, 0.1, True), (0.0, 0.0, True), (None, 0.0, True), (0.0, 0.1, False), (None, 0.1, False)],
)
def test_gate_fails_when_the_invalid_share_rises_and_passes_when_equal(old, new, passed):
    verdict = evaluate_gate(_baseline(old), _baseline(new))
    assert all(m.passed for m in verdict.metrics)  # only validity can decide
    assert verdict.passed is passed and verdict.validity.passed is passed
    labels = {"run_label": "new", "baseline_label": "old"}
    row = next(
        line for line in render_verdict(verdict, **labels).splitlines() if "(validity)" in line
    )
    assert ("FAIL: invalid share rose" in row) is not passed
    assert verdict_dict(verdict, **labels)["validity"]["passed"] is passed
    assert ("<failure" in verdict_junit(verdict, **labels)) is not passed
    assert "invalid_share (validity)" in verdict_markdown(verdict, **labels)
    if old is None and new:
        assert any("baseline records no invalid share" in n for n in verdict.notes)


def test_baseline_files_keep_the_share_and_older_ones_read_without_it():
    data = _baseline(0.25).to_dict()
    assert data["invalid_share"] == 0.25
    assert Baseline.from_dict(data).invalid_share == 0.25
    del data["invalid_share"]
    assert Baseline.from_dict(data).invalid_share is None
    with pytest.raises(HarnessError, match="malformed baseline"):
        Baseline.from_dict({**data, "invalid_share": 2})


def test_a_run_folder_recorded_before_the_metric_still_reads_reports_and_gates(data, tmp_path):
    run = tmp_path / "old"
    execute_run(prepare_run(_config(data, run)))
    recorded = json.loads((run / RESULTS_FILE).read_text())
    del recorded["summary"][registry.INVALID_SHARE]  # as runs of before wrote it
    for row in recorded["per_query"].values():
        row.pop(registry.INVALID_SHARE, None)
    (run / RESULTS_FILE).write_text(json.dumps(recorded))
    results = read_results(run)
    assert registry.INVALID_SHARE not in results.summary
    assert "invalid_share" not in render_summary(results)
    assert baseline_from_results(results).invalid_share is None
    baseline = tmp_path / "old.json"
    assert cli.invoke(app, ["baseline", str(run), "--to", str(baseline)]).exit_code == 0
    assert "invalid_share" not in json.loads(baseline.read_text())
    new = tmp_path / "new"
    execute_run(prepare_run(_config(data, new)))
    result = cli.invoke(app, ["gate", str(new), "--baseline", str(baseline)])
    assert result.exit_code == 0, result.output
    assert "| invalid_share ↓ (validity) |  | 0.0000 | 0.0000 |" in result.output
    report = cli.invoke(app, ["report", str(run), str(new), "--out", str(tmp_path / "r")])
    assert report.exit_code == 0, report.output
    assert "invalid_share" in (tmp_path / "r.md").read_text()  # the new run's row
    assert "invalid_share" in (tmp_path / "r.html").read_text()


def test_a_meta_reranker_sums_its_inner_orders_invalid_answers():
    from harness.rerankers.base import CallFacts
    from harness.rerankers.debiasers.meta import InnerTally

    tally = InnerTally()
    tally.add(CallFacts(1.0, 1.0))
    for why in ("first reason", "second reason"):
        tally.add(CallFacts(1.0, 1.0, extra={"invalid_answers": 2, "invalid_answer": why}))
    extra = tally.facts(3.0, 1, {}).extra
    assert extra["invalid_answers"] == 4 and extra["invalid_answer"] == "first reason"
    assert "invalid_answers" not in InnerTally().facts(0.0, 1, {}).extra


def test_an_adaptive_run_asks_an_invalid_order_once_per_invocation_and_decides_without_it(
    data, tmp_path
):
    """Adaptive rounds decide from valid answers only: q1's invalid orders are not asked again
    round after round (each order has one sample after the run); the rerun asks them again and
    the rule then reaches its end."""
    config = _config(
        data, tmp_path / "run", perms=6, target="kendall_tau=0.02", max_invalid_share=0.5
    )
    execute_run(prepare_run(config), reranker_factory=_marks_invalid({"q1"}))
    lines = (tmp_path / "run" / SAMPLES_FILE).read_text().splitlines()
    keys = [(json.loads(line)["query_id"], json.loads(line)["order_index"]) for line in lines]
    assert len(keys) == len(set(keys))  # nothing asked twice in one invocation
    assert {q for q, _ in keys} == {"q0", "q1", "q2", "q3"}
    results = execute_run(prepare_run(config))  # a fixed reranker: q1 asked again
    assert results.summary_value(registry.INVALID_SHARE) == 0.0
    assert results.summary_value(registry.KENDALL_TAU) == 1.0
