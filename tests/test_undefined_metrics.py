"""A metric the design cannot measure says "undefined" with the reason, never a number that
reads as a finding: position bias with at most 10 candidates (every candidate is always in the
top 10), the top-10 set metrics there, spreads across a single order; and the gate skips such
a metric with a note instead of passing it on a zero."""

from __future__ import annotations

import json
import math
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.gates.baseline import read_baseline
from harness.gates.gate import GateSpec, evaluate_gate, render_verdict
from harness.metrics import registry
from harness.metrics.position_bias import exposure_counts, position_bias_mad
from harness.results.store import read_results
from harness.runner import execute_run, prepare_run
from tests.conftest import write_rankgpt_folder

cli = CliRunner()
SHORT = registry.UNDEFINED_SHORT_LIST
SHOWN = "undefined (depth <= 10: every candidate is in the top 10)"


def _run(data: Path, out: Path, **overrides):
    config = RunConfig(
        reranker=overrides.pop("reranker", "identity"), dataset=str(data), out=str(out),
        perms=overrides.pop("perms", 4), **overrides,
    ).validate()  # fmt: skip
    return execute_run(prepare_run(config))


@pytest.mark.parametrize("n", [5, 10])
def test_position_bias_of_a_list_no_longer_than_the_top_k_is_undefined_not_zero(n):
    """The item at every position reaches the top 10 in every output, whatever the reranker
    does: the copying reranker (maximally biased) would read 0.0000, "no bias"."""
    shown = np.stack([np.random.default_rng(s).permutation(n) for s in range(6)])
    hits, trials = exposure_counts(shown, shown.copy(), k=10)  # a copying reranker
    assert (hits == trials).all()
    assert math.isnan(position_bias_mad(hits, trials, min(10, n) / n))
    copied = np.stack([np.random.default_rng(s).permutation(20) for s in range(6)])
    assert position_bias_mad(*exposure_counts(copied, copied, k=10), 0.5) > 0  # defined at 20


def test_a_depth_10_run_records_undefined_with_its_reason_and_prints_it(tmp_path):
    data = write_rankgpt_folder(tmp_path / "data", queries=3, candidates=20)
    results = _run(data, tmp_path / "d10", depth=10)
    assert math.isnan(results.summary_value("position_bias_mad"))
    assert all(math.isnan(v) for v in results.vector("position_bias_mad").values())
    for metric in ("position_bias_mad", "top10_jaccard", "top10_set_agreement"):
        assert results.undefined[metric] == {SHORT: 3}, metric
        assert results.undefined_text(metric) == SHOWN
    written = json.loads((tmp_path / "d10" / "results.json").read_text())
    assert written["summary"]["position_bias_mad"]["value"] is None  # NaN: strict JSON null
    assert written["undefined"]["position_bias_mad"] == {SHORT: 3}
    assert read_results(tmp_path / "d10").undefined == results.undefined
    summary = (tmp_path / "d10" / "summary.md").read_text()
    assert f"| position_bias_mad | {SHOWN} |" in summary
    assert "0.0000 | no-bias floor" not in summary
    # the same data at depth 20: defined, and the copying reranker is far from "no bias"
    deep = _run(data, tmp_path / "d20", depth=20)
    assert deep.summary_value("position_bias_mad") > 0.2 and not deep.undefined
    # the report says it too, for the run that has it
    out = tmp_path / "report"
    args = ["report", str(tmp_path / "d10"), str(tmp_path / "d20"), "--out", str(out)]
    assert cli.invoke(app, args).exit_code == 0
    row = next(
        line
        for line in out.with_suffix(".md").read_text().splitlines()
        if line.startswith("| position_bias_mad |")
    )
    assert SHOWN.replace("<", "\\<") in row  # Markdown escapes the "<"
    html = out.with_suffix(".html").read_text()
    assert SHOWN.replace("<", "&lt;") in html


def test_one_design_order_leaves_the_spread_across_orders_undefined(tmp_path):
    data = write_rankgpt_folder(tmp_path / "data", queries=3, candidates=12)
    results = _run(data, tmp_path / "one", perms=1)
    for metric in ("ndcg@10_std", "ndcg@10_range", "best_relevant_rank_var"):
        assert math.isnan(results.summary_value(metric)), metric
        assert results.undefined[metric] == {registry.UNDEFINED_ONE_ORDER: 3}
    # stability is still measured against the reference order
    assert not math.isnan(results.summary_value("kendall_tau"))
    summary = (tmp_path / "one" / "summary.md").read_text()
    assert "| ndcg@10_range | undefined (one order in the design" in summary


def test_a_mix_of_short_and_long_lists_leaves_the_short_ones_out_and_says_how_many(tmp_path):
    data = write_rankgpt_folder(tmp_path / "data", queries=3, candidates=20)
    raw = json.loads((data / "candidates.json").read_text())
    raw[0]["hits"] = raw[0]["hits"][:8]  # q0: 8 candidates
    (data / "candidates.json").write_text(json.dumps(raw))
    results = _run(data, tmp_path / "mixed")
    values = results.vector("position_bias_mad")
    assert math.isnan(values["q0"]) and not math.isnan(values["q1"])
    assert results.undefined["position_bias_mad"] == {SHORT: 1}
    assert results.undefined_text("position_bias_mad") == f"undefined for 1 of 3 queries ({SHORT})"
    # pooled over the long lists only: the same as a run without q0
    longer = _run(data, tmp_path / "long", queries="q1,q2")
    assert results.summary_value("position_bias_mad") == pytest.approx(
        longer.summary_value("position_bias_mad")
    )
    assert (
        f"(undefined for 1 of 3 queries ({SHORT}))"
        in (tmp_path / "mixed" / "summary.md").read_text()
    )


@pytest.fixture(scope="module")
def short_runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("short")
    data = write_rankgpt_folder(root / "data", queries=6, candidates=10)
    folders = {name: root / name for name in ("base", "new")}
    for folder in folders.values():
        _run(data, folder)
    baseline = root / "base.json"
    assert cli.invoke(app, ["baseline", str(folders["base"]), "--to", str(baseline)]).exit_code == 0
    folders["baseline"] = baseline
    # what a harness from before this change recorded: 0.0 ("no bias") and no reason
    old = json.loads(baseline.read_text())
    old.pop("undefined")
    old["per_query"]["position_bias_mad"] = [0.0] * 6
    folders["old_baseline"] = root / "old.json"
    folders["old_baseline"].write_text(json.dumps(old))
    return folders


def _gate(folders, baseline: str, *flags: str):
    args = ["gate", str(folders["new"]), "--baseline", str(folders[baseline]), *flags]
    return cli.invoke(app, args)


def test_the_gate_skips_an_undefined_metric_with_a_note_not_a_pass_by_zero(short_runs, tmp_path):
    assert read_baseline(short_runs["baseline"]).undefined["position_bias_mad"] == {SHORT: 6}
    flags = ["--max-drop", "position_bias_mad=0.01", "--max-drop", "ndcg@10=0.01"]
    result = _gate(short_runs, "baseline", *flags, "--json", str(tmp_path / "v.json"),
                   "--junit", str(tmp_path / "v.xml"))  # fmt: skip
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "position_bias_mad" in line)
    assert f"skipped: {SHOWN}" in row
    assert "note: position_bias_mad skipped: undefined for every query" in result.output
    verdict = json.loads((tmp_path / "v.json").read_text())
    entry = next(m for m in verdict["metrics"] if m["metric"] == "position_bias_mad")
    assert entry["skipped"] is True and entry["passed"] is True and entry["p_holm"] is None
    suite = ElementTree.parse(tmp_path / "v.xml").getroot().find("testsuite")
    assert suite.get("skipped") == "1" and suite.get("failures") == "0"
    case = next(c for c in suite.iter("testcase") if c.get("name") == "position_bias_mad")
    assert case.find("skipped") is not None
    # a baseline recorded as 0.0 before undefined values were named: skipped too, not failed
    # as "newly undefined", and not passed on its zeros
    old = _gate(short_runs, "old_baseline", *flags)
    assert old.exit_code == 0, old.output
    assert "skipped: undefined" in next(
        line for line in old.output.splitlines() if "position_bias_mad" in line
    )


def test_gating_only_undefined_metrics_is_refused_in_one_line(short_runs):
    result = _gate(short_runs, "baseline", "--max-drop", "position_bias_mad=0.01")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "nothing to gate" in lines[0] and SHORT in lines[0]


def test_the_default_gates_hold_for_short_lists(short_runs):
    result = _gate(short_runs, "baseline")  # nDCG, tau, RBO: all defined at 10 candidates
    assert result.exit_code == 0, result.output
    assert "skipped" not in result.output


def test_undefined_without_a_recorded_reason_still_fails_loudly():
    from harness.gates.baseline import Baseline

    def snapshot(undefined):
        ids = ("q0", "q1", "q2")
        return Baseline(
            query_ids=ids,
            per_query={"position_bias_mad": (math.nan,) * 3, "ndcg@10": (0.5,) * 3},
            reranker={"name": "r"},
            dataset={"name": "d", "fingerprint": "f", "depth": None},
            permutations={"strategy": "random", "random_orders": 5, "seed": 0},
            config_hash="c",
            undefined=undefined,
        )

    specs = [GateSpec("position_bias_mad", 0.01, 0.03), GateSpec("ndcg@10", 0.01, 0.03)]
    unexplained = evaluate_gate(snapshot({}), snapshot({}), specs)
    assert not unexplained.passed and "nothing can be compared" in unexplained.metrics[0].reason
    explained = evaluate_gate(snapshot({}), snapshot({"position_bias_mad": {SHORT: 3}}), specs)
    assert explained.passed and explained.metrics[0].skipped
    text = render_verdict(explained, run_label="r", baseline_label="b")
    assert f"skipped: undefined ({SHORT})" in text and "**PASS**" in text
    # the skipped metric is out of the Holm family: the tested one keeps its own p
    assert explained.metrics[1].p_holm == explained.metrics[1].p_value
    with pytest.raises(HarnessError, match="nothing to gate"):
        evaluate_gate(snapshot({}), snapshot({"position_bias_mad": {SHORT: 3}}), specs[:1])


def test_a_skipped_metric_runs_neither_test_and_the_order_noise_family_counts_without_it():
    from harness.gates.baseline import Baseline
    from harness.gates.outputs import verdict_dict

    def snapshot(ndcg, undefined):
        ids = tuple(f"q{i}" for i in range(8))
        return Baseline(
            query_ids=ids,
            per_query={
                "position_bias_mad": (math.nan,) * 8,
                "ndcg@10": tuple(ndcg),
                "ndcg@10_std": (0.01,) * 8,
            },
            reranker={"name": "r"},
            dataset={"name": "d", "fingerprint": "f", "depth": None},
            permutations={"strategy": "random", "random_orders": 5, "seed": 0},
            config_hash="c",
            undefined=undefined,
        )

    specs = [GateSpec("position_bias_mad", 0.01, 0.03), GateSpec("ndcg@10", 0.01, 0.03)]
    why = {"position_bias_mad": {SHORT: 8}}
    base = snapshot([0.5] * 8, {})
    verdict = evaluate_gate(base, snapshot([0.5] * 8, why), specs)
    skipped, ndcg = verdict.metrics
    assert verdict.passed and skipped.skipped and skipped.passed and skipped.failed_by == ()
    assert math.isnan(skipped.p_holm) and math.isnan(skipped.noise_p_holm)
    # the family is nDCG's sign-flip and order-noise tests only: 2 tests, not 3 or 4
    assert not math.isnan(ndcg.noise_p)
    assert "all 2 tests" in render_verdict(verdict, run_label="r", baseline_label="b")
    entry = verdict_dict(verdict, run_label="r", baseline_label="b")["metrics"][0]
    assert entry["skipped"] is True and entry["failed_by"] == []
    assert entry["order_noise"]["applies"] is False
    # undefined for every query without a recorded reason: failed by "undefined"
    unexplained = evaluate_gate(base, snapshot([0.5] * 8, {}), specs)
    assert unexplained.metrics[0].failed_by == ("undefined",) and not unexplained.passed
    # newly undefined queries fail alongside the other checks
    newly = evaluate_gate(base, snapshot([math.nan] + [0.5] * 7, why), specs)
    assert "undefined" in newly.metrics[1].failed_by and not newly.passed


def test_a_one_candidate_list_has_no_order_so_tau_and_copy_tau_are_undefined(tmp_path):
    """One item has no order to change: Kendall tau (0/0), the tau of output vs shown order
    and every other order metric are undefined with the reason, not 1.0 (perfect agreement)."""
    data = write_rankgpt_folder(tmp_path / "data", queries=2, candidates=3)
    results = _run(data, tmp_path / "d1", depth=1)
    one = {registry.UNDEFINED_ONE_CANDIDATE: 2}
    for metric in (
        "kendall_tau", "copy_tau", "spearman", "rbo@10", "top1_agreement", "ppi", "gpi",
        "distinct_rankings", "ndcg@10_range", "best_relevant_rank_var",
    ):  # fmt: skip
        assert math.isnan(results.summary_value(metric)), metric
        assert results.undefined[metric] == one, metric
    assert (
        results.undefined_text("kendall_tau") == f"undefined ({registry.UNDEFINED_ONE_CANDIDATE})"
    )
    assert results.summary_value("ndcg@10") == results.summary_value("ndcg@10")  # still defined
