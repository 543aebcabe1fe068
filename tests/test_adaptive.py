"""Adaptive order sampling (issue 32): the rule's pieces against textbook cases, and runs that
stop early, resume where they stopped and feed every downstream reader."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t as student_t

import harness
from harness.adaptive import (
    MAX_GROWTH,
    QueryEstimate,
    Target,
    decide,
    estimate,
    query_values,
)
from harness.adaptive_run import ADAPTIVE_FILE as ADAPTIVE
from harness.errors import HarnessError
from harness.gates.baseline import Baseline, baseline_from_results
from harness.gates.gate import evaluate_gate, parse_specs, render_verdict
from harness.metrics.paired import order_noise_test
from harness.metrics.stability import kendall_tau
from harness.report.load import load_run
from harness.report.tables import provenance_tables
from tests.conftest import write_rankgpt_folder


def by_number(query: str, docs: list[str]) -> list[float]:
    """Order-invariant: scores by the number in each doc's text."""
    return [-float(doc.split()[1]) for doc in docs]


def half_sensitive(query: str, docs: list[str]) -> list[float]:
    """Order-sensitive on queries q0 and q1 (a primacy bonus), invariant on the others."""
    strength = 4.0 if query.endswith(("0", "1")) else 0.0
    return [-float(doc.split()[1]) + strength * (len(docs) - i) for i, doc in enumerate(docs)]


def test_target_parses_and_refuses_bad_input():
    target = Target.parse("kendall_tau=±0.02", min_perms=3, max_perms=20)
    assert (target.metric, target.half_width, target.min_perms) == ("kendall_tau", 0.02, 3)
    assert target.z == pytest.approx(1.959964, abs=1e-6)
    for text, why in [
        ("kendall_tau", "METRIC=HALF_WIDTH"),
        ("ndcg@10_std=0.1", "cannot steer"),
        ("kendall_tau=0", "half-width"),
        ("kendall_tau=abc", "METRIC=HALF_WIDTH"),
    ]:
        with pytest.raises(HarnessError, match=why):
            Target.parse(text, min_perms=3, max_perms=20)
    with pytest.raises(HarnessError, match="at least 2"):
        Target.parse("rbo@10=0.05", min_perms=1, max_perms=20)
    assert Target.parse("rbo@10=0.05", min_perms=2, max_perms=20).min_perms == 2
    assert Target.parse("copy_tau=0.05", min_perms=2, max_perms=20).min_perms == 2
    with pytest.raises(HarnessError, match="at least --min-perms"):
        Target.parse("kendall_tau=0.05", min_perms=5, max_perms=4)


def test_jackknife_of_a_mean_is_the_textbook_variance():
    values = np.array([0.2, 0.5, -0.1, 0.9, 0.4])
    found = estimate(values)
    assert found.mean == pytest.approx(values.mean())
    assert found.variance == pytest.approx(values.var(ddof=1) / len(values))


def test_jackknife_of_a_pair_mean_matches_leaving_each_order_out():
    rng = np.random.default_rng(3)
    ids = [f"d{i}" for i in range(9)]
    rankings = [[ids[j] for j in rng.permutation(9)] for _ in range(6)]
    matrix = query_values("kendall_tau", rankings)
    for i, j in itertools.combinations(range(6), 2):  # the vectorised taus are the metric's
        assert matrix[i, j] == pytest.approx(kendall_tau(rankings[i], rankings[j]))

    def pair_mean(rows):
        return np.mean(
            [kendall_tau(rankings[a], rankings[b]) for a, b in itertools.combinations(rows, 2)]
        )

    left_out = np.array([pair_mean([r for r in range(6) if r != k]) for k in range(6)])
    expected = 5 / 6 * np.sum((left_out - left_out.mean()) ** 2)
    found = estimate(matrix)
    assert found.mean == pytest.approx(pair_mean(range(6)))
    assert found.variance == pytest.approx(expected)


def test_top_k_set_metrics_are_undefined_on_short_lists_as_in_the_summary():
    short = [[f"d{i}" for i in range(8)]] * 3
    assert np.isnan(estimate(query_values("top10_jaccard", short)).mean)
    assert estimate(query_values("rbo@10", short)).mean == pytest.approx(1.0)


def test_agreeing_queries_stop_at_once_and_varying_ones_grow_at_most_twofold():
    target = Target("kendall_tau", 0.02, 3, 20)
    settled = {q: QueryEstimate(3, 1.0, 0.0) for q in "abc"}
    stop = decide(settled, target)
    assert stop.stop and stop.reason == "target" and stop.half_width == 0.0
    mixed = settled | {"d": QueryEstimate(3, 0.5, 0.05)}
    step = decide(mixed, target)  # half-width 1.96 * sqrt(0.05) / 4 = 0.11: far from 0.02
    assert step.half_width == pytest.approx(1.959964 * math.sqrt(0.05) / 4)
    assert not step.stop and set(step.counts.values()) == {MAX_GROWTH * 3}  # the same for all
    near = decide(settled | {"d": QueryEstimate(3, 0.5, 0.0025)}, target)
    assert set(near.counts.values()) == {5}  # h = 0.0245: 3 * (0.0245 / 0.02)^2 = 4.5 -> 5
    at_max = {q: QueryEstimate(20, 0.5, 0.05) for q in "ab"}
    assert decide(at_max, target).reason == "max"
    undefined = decide({"a": QueryEstimate(3, math.nan, math.nan)}, target)
    assert undefined.stop and undefined.reason == "undefined"


def test_a_round_of_pairs_is_judged_by_the_t_interval_between_queries():
    target = Target("kendall_tau", 0.02, 2, 20)
    values = [1.0, 0.6, 0.8, 0.9]
    pairs = {f"q{k}": QueryEstimate(2, v, math.nan) for k, v in enumerate(values)}
    step = decide(pairs, target)  # one pair per query: no per-query variance
    expected = student_t.ppf(0.975, 3) * np.std(values, ddof=1) / 2  # textbook t interval
    assert step.estimate == pytest.approx(np.mean(values))
    assert step.half_width == pytest.approx(expected)
    assert not step.stop and set(step.counts.values()) == {4}  # x2 at most; 3 at least
    agreeing = decide({q: QueryEstimate(2, 1.0, math.nan) for q in "abc"}, target)
    assert agreeing.stop and agreeing.reason == "target" and agreeing.half_width == 0.0
    lone = decide({"a": QueryEstimate(2, 0.5, math.nan)}, target)  # no spread with one query
    assert not lone.stop and lone.counts == {"a": 3}
    assert decide({"a": QueryEstimate(2, 0.5, math.nan)}, Target("kendall_tau", 0.02, 2, 2)).stop


def _samples(run_dir: Path) -> dict[tuple[str, int], tuple]:
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    return {(r["query_id"], r["order_index"]): (r["shown"], r["ranking"]) for r in rows}


def test_an_adaptive_run_shows_a_prefix_of_the_fixed_orders_and_says_why_it_stopped(tmp_path):
    data = write_rankgpt_folder(tmp_path / "data", queries=6, candidates=8)
    common = {"dataset": str(data), "perms": 12, "seed": 5}
    fixed = harness.evaluate(harness.from_scores(half_sensitive), out=tmp_path / "f", **common)
    adaptive = harness.evaluate(
        harness.from_scores(half_sensitive),
        out=tmp_path / "a",
        target="kendall_tau=0.05",
        **common,
    )
    record = json.loads((tmp_path / "a" / "adaptive.json").read_text())
    assert record["finished"] and record["rule"]["metric"] == "kendall_tau"
    orders = {q: row["orders"] for q, row in record["queries"].items()}
    assert set(orders) == {f"q{k}" for k in range(6)}
    assert all(3 <= n <= 12 for n in orders.values())
    assert len(set(orders.values())) == 1 and orders["q0"] > 3  # q0, q1 vary: all get more
    assert {row["stopped"] for row in record["queries"].values()} <= {"target", "max"}
    shown = _samples(tmp_path / "a")
    full = _samples(tmp_path / "f")
    assert all(full[key] == value for key, value in shown.items())  # the same seeded stream
    assert {q: sum(1 for k in shown if k[0] == q) - 1 for q in orders} == orders  # + reference
    assert adaptive.per_query["n_orders"].to_dict() == orders
    assert adaptive.summary.loc["kendall_tau", "value"] == pytest.approx(
        record["rounds"][-1]["estimate"]
    )
    assert fixed.summary.loc["kendall_tau", "value"] < 1
    # the gate weighs each query's spread by its own number of orders
    base = baseline_from_results(fixed.results, tmp_path / "f")
    new = baseline_from_results(adaptive.results, tmp_path / "a")
    # ...which the baseline carries (it was left out as descriptive: the test took --perms)
    assert new.vector("n_orders") == orders
    assert Baseline.from_dict(new.to_dict()).vector("n_orders") == orders
    verdict = evaluate_gate(base, new, parse_specs(["ndcg@10=0.01"]))
    as_if_all = evaluate_gate(
        base, replace(new, per_query={**new.per_query, "n_orders": (12.0,) * 6}),
        parse_specs(["ndcg@10=0.01"]),
    )  # fmt: skip
    assert verdict.metrics[0].noise_se > as_if_all.metrics[0].noise_se  # fewer orders: noisier
    assert verdict.metrics[0].spec.metric == "ndcg@10"
    assert verdict.metrics[0].noise_note == "" and verdict.metrics[0].noise_se > 0
    assert evaluate_gate(new, new, parse_specs(["ndcg@10=0.01"])).passed
    header = render_verdict(verdict, run_label="a", baseline_label="f")
    assert f"{orders['q0']} random orders, seed 5" in header  # shown, not --perms 12
    fixed_verdict = evaluate_gate(new, base, parse_specs(["ndcg@10=0.01"]))
    assert "12 random orders, seed 5" in render_verdict(fixed_verdict, run_label="f",
                                                        baseline_label="a")  # fmt: skip
    assert (
        "3 to 12 random (adaptive, target kendall_tau=0.05)"
        in (tmp_path / "a" / "summary.md").read_text()
    )


def test_order_noise_test_with_per_query_orders_is_the_formula():
    diff = np.array([-0.02, 0.01, -0.03])
    s_new, s_base = np.array([0.1, 0.0, 0.2]), np.array([0.1, 0.05, 0.1])
    same = order_noise_test(diff, s_new, s_base, orders=np.array([5, 5, 5]), margin=0.01)
    assert same == order_noise_test(diff, s_new, s_base, orders=5, margin=0.01)
    orders = np.array([3, 20, 7])
    found = order_noise_test(diff, s_new, s_base, orders=orders, margin=0.01)
    v = (s_new + s_base) ** 2 / (orders - 1)
    se = math.sqrt(v.sum()) / 3
    df = v.sum() ** 2 / np.sum(v**2 / (orders - 1))
    assert found.se == pytest.approx(se)
    assert found.df == pytest.approx(df)
    assert found.p == pytest.approx(student_t.cdf((diff.mean() + 0.01) / se, df))


def test_an_interrupted_adaptive_run_resumes_to_the_same_orders_and_numbers(tmp_path):
    data = write_rankgpt_folder(tmp_path / "data", queries=6, candidates=8)
    common = {"dataset": str(data), "perms": 12, "seed": 1, "target": "kendall_tau=0.05"}
    fn = harness.from_scores(half_sensitive)
    harness.evaluate(fn, out=tmp_path / "whole", **common)
    harness.evaluate(fn, out=tmp_path / "cut", **common)
    samples = tmp_path / "cut" / "samples.jsonl"
    lines = samples.read_text().splitlines(keepends=True)
    assert len(lines) > 25
    samples.write_text("".join(lines[:25]))  # stopped mid-way (after round 0)
    (tmp_path / "cut" / "adaptive.json").unlink()
    harness.evaluate(fn, out=tmp_path / "cut", **common)
    assert _samples(tmp_path / "cut") == _samples(tmp_path / "whole")
    whole = json.loads((tmp_path / "whole" / "adaptive.json").read_text())
    assert json.loads((tmp_path / "cut" / "adaptive.json").read_text()) == whole
    summary = json.loads((tmp_path / "whole" / "results.json").read_text())["summary"]
    again = json.loads((tmp_path / "cut" / "results.json").read_text())["summary"]
    assert again["kendall_tau"] == summary["kendall_tau"]


def test_an_invariant_reranker_stops_at_the_minimum(tmp_path):
    data = write_rankgpt_folder(tmp_path / "data", queries=4, candidates=8)
    harness.evaluate(
        harness.from_scores(by_number),
        dataset=str(data),
        perms=20,
        min_perms=3,
        target="kendall_tau=0.02",
        repeats=2,
        out=tmp_path / "r",
    )
    record = json.loads((tmp_path / "r" / "adaptive.json").read_text())
    assert {row["orders"] for row in record["queries"].values()} == {3}
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["counts"]["samples"] == 4 * (1 + 3 + 2)  # reference, 3 orders, 2 repeats
    assert results["noise_floor"]  # the floor is measured beside the adaptive design
    (table,) = provenance_tables([load_run(tmp_path / "r")])[:1]
    cells = " ".join(" ".join(row) for row in table.rows)
    assert "3 to 20 random (adaptive, target kendall_tau=0.02)" in cells
    assert "24 of at most 92 orders" in cells  # 4 x (1 + 20 + 2) planned
    assert record["rounds"][-1]["half_width"] == 0.0 and record["stopped_because"] == "target"


def test_an_invariant_reranker_stops_at_two_orders_with_min_perms_2(tmp_path):
    data = write_rankgpt_folder(tmp_path / "data", queries=3, candidates=6)
    run = harness.evaluate(
        harness.from_scores(by_number),
        dataset=str(data),
        perms=20,
        min_perms=2,
        target="kendall_tau=0.02",
        out=tmp_path / "r",
    )
    record = json.loads((tmp_path / "r" / "adaptive.json").read_text())
    assert {row["orders"] for row in record["queries"].values()} == {2}
    assert record["stopped_because"] == "target" and record["rounds"][-1]["half_width"] == 0.0
    assert run.summary.loc["kendall_tau", "value"] == 1.0


def test_target_needs_the_random_strategy(tmp_path):
    with pytest.raises(HarnessError, match="only to --strategy random"):
        harness.evaluate(by_number, strategy="cyclic", target="kendall_tau=0.02", out=tmp_path)


def test_a_copy_tau_target_reads_the_shown_orders(tmp_path):
    data = write_rankgpt_folder(tmp_path / "data", queries=3, candidates=6)
    run = harness.evaluate(
        harness.from_scores(lambda q, docs: [-float(i) for i in range(len(docs))], name="copier"),
        dataset=str(data),
        perms=10,
        min_perms=2,
        target="copy_tau=0.05",
        out=tmp_path / "r",
    )
    record = json.loads((tmp_path / "r" / "adaptive.json").read_text())
    assert {row["orders"] for row in record["queries"].values()} == {2}  # copies: tau 1 each
    assert record["rounds"][-1]["estimate"] == pytest.approx(1.0)
    assert run.summary.loc["copy_tau", "value"] == pytest.approx(1.0)


ADAPTIVE_SUITE = """\
suite: adaptive
version: 1
metrics: [ndcg@10, kendall_tau]
primary: ndcg@10
aggregate: {seed: 0, resamples: 200}
tasks:
  - name: random
    dataset: ./data
    design: {strategy: random, perms: 5, min_perms: 3, target: "kendall_tau=0.02"}
"""


def test_a_suite_task_with_a_target_runs_adaptive_and_is_reused_once_finished(tmp_path):
    from harness.suites.run import run_suite
    from harness.suites.spec import load_suite

    write_rankgpt_folder(tmp_path / "data", queries=4, candidates=8)
    path = tmp_path / "suite.yaml"
    path.write_text(ADAPTIVE_SUITE)
    suite = load_suite(path)
    out = tmp_path / "out"
    first = run_suite(suite, ["first-stage", "identity"], out)
    assert (first.runs, first.reused) == (2, 0)
    invariant = json.loads((out / "runs" / "first-stage" / "random" / ADAPTIVE).read_text())
    assert {q["orders"] for q in invariant["queries"].values()} == {3}  # stops at the minimum
    card = json.loads(first.scorecards["first-stage"].read_bytes())
    assert card["tasks"]["random"]["orders"] == 4 * (1 + 3)  # shown, not the 4 x 6 at most
    copier = json.loads((out / "runs" / "identity" / "random" / ADAPTIVE).read_text())
    assert copier["finished"] and max(q["orders"] for q in copier["queries"].values()) > 3
    again = run_suite(suite, ["first-stage", "identity"], out)
    assert again.reused == 2  # a finished adaptive run is complete though it showed < --perms
    bad = path.read_text().replace("kendall_tau=0.02", "ndcg@10=0.02")
    path.write_text(bad)
    with pytest.raises(HarnessError, match=r"suite\.yaml.*cannot steer"):
        load_suite(path)


def test_the_work_line_says_the_range_of_orders_an_adaptive_run_may_show(tmp_path):
    from typer.testing import CliRunner

    from harness.cli import app

    data = write_rankgpt_folder(tmp_path / "data", queries=3, candidates=6)
    args = ["run", "--reranker", "first-stage", "--dataset", str(data), "--perms", "6"]
    result = CliRunner().invoke(
        app, [*args, "--target", "kendall_tau=0.02", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    assert (
        "work: 3 queries x 4 to 7 orders (adaptive, target kendall_tau=0.02) = 12 to 21 "
        "reranked orders" in result.output
    )  # the reference row, then 3 to 6 random orders per query
