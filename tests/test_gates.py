"""Baselines and the regression gate: passes reruns, fails real regressions, refuses mismatches."""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.gates.baseline import Baseline, baseline_from_results, read_baseline, write_baseline
from harness.gates.gate import DEFAULT_GATES, GateSpec, evaluate_gate, parse_specs, render_verdict
from harness.gates.outputs import verdict_dict, verdict_junit, verdict_markdown
from harness.metrics import paired, registry
from harness.metrics.paired import holm, sign_flip_pvalue, win_tie_loss
from harness.rerankers.base import RerankOutput
from harness.rerankers.registry import build_reranker
from harness.results.store import read_results
from harness.runner import execute_run, prepare_run
from tests.conftest import write_rankgpt_folder

cli = CliRunner()
QUERIES = 8  # 2**8 sign patterns: an exact test can reach p = 1/256, significant after Holm


def _run(data: Path, out: Path, *, factory=None, **overrides) -> Path:
    config = RunConfig(
        reranker=overrides.pop("reranker", "first-stage"),
        dataset=str(data),
        perms=overrides.pop("perms", 4),
        out=str(out),
        **overrides,
    ).validate()
    kwargs = {"reranker_factory": factory} if factory else {}
    execute_run(prepare_run(config), **kwargs)
    return out


def _moves_one_query(preset, context):
    """First-stage (declared order-invariant) that breaks invariance on query q3 only."""
    reranker = build_reranker(preset, context)
    original = reranker.rerank

    def rerank(cset, orders):
        outputs = original(cset, orders)
        if cset.query_id != "q3":
            return outputs
        moved = []
        for order, output in zip(orders, outputs, strict=True):
            ranking = output.ranking
            if order[0] != 0:  # any non-identity order: swap the top two
                ranking = (ranking[1], ranking[0], *ranking[2:])
            moved.append(RerankOutput(ranking=ranking, facts=output.facts, scores=output.scores))
        return moved

    reranker.rerank = rerank
    return reranker


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gate-runs")
    data = write_rankgpt_folder(root / "data", queries=QUERIES, candidates=10)
    other = write_rankgpt_folder(root / "other", queries=QUERIES, candidates=10, seed_text="x")
    folders = {
        "fs": _run(data, root / "fs"),
        "fs_again": _run(data, root / "fs_again"),
        "identity": _run(data, root / "identity", reranker="identity"),
        "moved": _run(data, root / "moved", factory=_moves_one_query),
        "fewer_perms": _run(data, root / "fewer_perms", perms=3),
        "fewer_queries": _run(data, root / "fewer_queries", queries=5),
        "other_data": _run(other, root / "other_data"),
    }
    baseline = root / "baselines" / "fs.json"
    result = cli.invoke(app, ["baseline", str(folders["fs"]), "--to", str(baseline)])
    assert result.exit_code == 0, result.output
    folders["baseline"] = baseline
    return folders


def _gate(runs, name: str, *extra: str):
    return cli.invoke(app, ["gate", str(runs[name]), "--baseline", str(runs["baseline"]), *extra])


def test_baseline_holds_per_query_vectors_and_provenance(runs):
    data = json.loads(runs["baseline"].read_text())
    assert data["query_ids"] == [f"q{i}" for i in range(QUERIES)]
    assert len(data["per_query"]["ndcg@10"]) == QUERIES
    assert data["reranker"]["name"] == "first-stage"
    assert data["reranker"]["order_invariant"] is True
    assert data["dataset"]["fingerprint"]
    assert data["permutations"] == {
        "strategy": "random",
        "random_orders": 4,
        "seed": 0,
        "total_orders": QUERIES * 5,
    }
    assert "model" in data and "prompt_hash" in data
    assert read_baseline(runs["baseline"]).per_query["ndcg@10"] == tuple(
        data["per_query"]["ndcg@10"]
    )


def test_gate_passes_a_rerun_of_the_same_configuration(runs):
    result = _gate(runs, "fs_again")
    assert result.exit_code == 0, result.output
    assert "**PASS**" in result.output
    assert "| ndcg@10 ↑ | " in result.output
    # the invariance row: the check in the metric column, the new run's min tau as its value
    assert "| order invariance (declared): min Kendall tau | 8 | n/a | 1.0000 |" in result.output


def test_gate_fails_a_truly_worse_run(runs):
    result = _gate(runs, "identity")
    assert result.exit_code == 1, result.output
    assert "**FAIL**" in result.output
    tau_row = next(line for line in result.output.splitlines() if line.startswith("| kendall_tau"))
    assert "drop beyond margin" in tau_row and "floor" in tau_row


def test_gate_gives_the_same_verdict_on_repeated_calls(runs):
    first, second = _gate(runs, "identity"), _gate(runs, "identity")
    assert first.output == second.output and first.exit_code == second.exit_code == 1


def test_invariant_reranker_that_moves_one_query_fails(runs):
    result = _gate(runs, "moved")
    assert result.exit_code == 1, result.output
    row = next(line for line in result.output.splitlines() if "order invariance" in line)
    assert "FAIL: 1 queries moved [q3]" in row
    # The statistical gates alone would have let this through: one query of eight moved a bit.
    assert all(
        "pass" in line
        for line in result.output.splitlines()
        if line.startswith(("| ndcg@10 ", "| rbo@10 "))
    )


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("fewer_perms", "random orders per query (--perms): baseline 4, run 3"),
        ("fewer_queries", "query set: 3 only in baseline [q5, q6, q7]"),
        ("other_data", "dataset fingerprint"),
    ],
)
def test_mismatched_provenance_is_an_error_naming_it(runs, name, fragment):
    result = _gate(runs, name)
    assert result.exit_code == 2, result.output
    assert fragment in result.output
    assert "Traceback" not in result.output


def test_gate_cli_rejects_bad_options(runs):
    assert "METRIC=NUMBER" in _gate(runs, "fs_again", "--max-drop", "ndcg@10").output
    result = _gate(runs, "fs_again", "--max-drop", "nope=0.1")
    assert (
        result.exit_code == 2
        and "unknown metric 'nope'; gateable metrics: ndcg@10" in result.output
    )
    assert "n_candidates" not in result.output
    result = _gate(runs, "fs_again", "--max-drop", "n_orders=1")
    assert result.exit_code == 2 and "'n_orders' is descriptive" in result.output
    assert len(result.output.strip().splitlines()) == 1
    missing = cli.invoke(app, ["gate", str(runs["fs"]), "--baseline", "missing.json"])
    assert missing.exit_code == 2 and "baseline not found" in missing.output


# Pure statistics on synthetic per-query vectors -------------------------------------------


def _snapshot(values, metric: str = "ndcg@10", invariant: bool = False) -> Baseline:
    ids = tuple(f"q{i}" for i in range(len(values)))
    return Baseline(
        query_ids=ids,
        per_query={"kendall_tau": (1.0,) * len(ids), metric: tuple(float(v) for v in values)},
        reranker={"name": "r", "order_invariant": invariant},
        dataset={"name": "d", "fingerprint": "f", "depth": None},
        permutations={"strategy": "random", "random_orders": 5, "seed": 0, "total_orders": 1},
        config_hash="c",
    )


def _verdict(old, new, spec: GateSpec):
    return evaluate_gate(_snapshot(old, spec.metric), _snapshot(new, spec.metric), [spec])


def test_drop_within_the_margin_passes_and_beyond_it_fails():
    rng = np.random.default_rng(1)
    old = rng.uniform(0.3, 0.7, size=30)
    spec = GateSpec("ndcg@10", margin=0.01, floor=0.05)
    within = _verdict(old, old - 0.005 + rng.normal(0, 0.002, 30), spec)
    beyond = _verdict(old, old - 0.02 + rng.normal(0, 0.002, 30), spec)
    assert within.passed and within.metrics[0].p_value > 0.5
    assert not beyond.passed and beyond.metrics[0].significant
    assert not beyond.metrics[0].below_floor  # caught by the test, not the floor


def test_improvement_passes_and_floor_catches_a_large_drop_on_few_queries():
    spec = GateSpec("ndcg@10", margin=0.01, floor=0.03)
    assert _verdict([0.5, 0.6, 0.4], [0.7, 0.8, 0.6], spec).passed
    fall = _verdict([0.5, 0.6, 0.4], [0.4, 0.5, 0.3], spec).metrics[0]
    assert fall.p_value == pytest.approx(1 / 8)  # three queries cannot be significant
    assert fall.below_floor and not fall.passed and "floor" in fall.reason


GATEABLE = [spec for spec in registry.per_query() if spec.has_direction]


@pytest.mark.parametrize("metric", GATEABLE, ids=lambda spec: spec.name)
def test_every_directed_metric_fails_a_clear_worsening_and_passes_the_same_improvement(metric):
    spec = GateSpec(metric.name, margin=0.01, floor=0.03)
    worse = -0.5 if metric.higher_is_better else 0.5
    old = np.linspace(1.0, 2.0, 10)
    assert not _verdict(old, old + worse, spec).passed
    assert _verdict(old, old - worse, spec).passed


def test_more_distinct_rankings_per_query_is_a_regression():
    spec = GateSpec("distinct_rankings", margin=0.5, floor=1.5)
    assert not _verdict([1.0] * 8, [6.0] * 8, spec).passed
    assert _verdict([6.0] * 8, [1.0] * 8, spec).passed


@pytest.mark.parametrize(
    ("metric", "fragment"),
    [
        ("n_orders", "is descriptive"),
        ("n_candidates", "is descriptive"),
        ("latency_ms_p50", "not recorded per query"),
        ("ndcg@5", "unknown metric 'ndcg@5'"),
    ],
)
def test_metrics_that_cannot_be_gated_are_refused(metric, fragment):
    with pytest.raises(HarnessError, match=fragment):
        parse_specs([f"{metric}=0.1"])


def test_a_metric_undefined_for_every_query_fails_loudly():
    spec = GateSpec("kendall_tau", margin=0.02, floor=0.06)
    old, new = _snapshot([math.nan] * 4, "kendall_tau"), _snapshot([math.nan] * 4, "kendall_tau")
    verdict = evaluate_gate(old, new, [spec])
    assert not verdict.passed and verdict.metrics[0].n == 0
    text = render_verdict(verdict, run_label="r", baseline_label="b")
    assert "undefined for every query" in text and "**FAIL**" in text


def test_queries_undefined_in_both_runs_are_counted_not_hidden():
    spec = GateSpec("ndcg@10", margin=0.01, floor=0.05)
    values = [0.5, math.nan, 0.4, 0.6]
    verdict = evaluate_gate(_snapshot(values), _snapshot(values), [spec])
    assert verdict.passed and verdict.metrics[0].n == 3 and verdict.metrics[0].n_total == 4
    assert "3 of 4 defined" in render_verdict(verdict, run_label="r", baseline_label="b")


def test_a_metric_that_becomes_undefined_fails():
    spec = GateSpec("ndcg@10", margin=0.01, floor=0.05)
    verdict = evaluate_gate(_snapshot([0.5, 0.5, 0.4]), _snapshot([0.5, math.nan, 0.4]), [spec])
    assert not verdict.passed and verdict.metrics[0].newly_undefined == 1
    assert "undefined for 1 queries defined in the baseline" in verdict.metrics[0].reason


def test_declared_invariance_of_the_baseline_stays_enforced():
    spec = GateSpec("ndcg@10", margin=0.01, floor=0.05)
    old = _snapshot([0.5] * 4, invariant=True)
    moved = replace(_snapshot([0.5] * 4), per_query={"kendall_tau": (1.0, 0.8, 1.0, 1.0),
                                                     "ndcg@10": (0.5,) * 4})  # fmt: skip
    verdict = evaluate_gate(old, moved, [spec])
    assert verdict.invariance is not None and not verdict.passed
    assert any("still enforced" in note for note in verdict.notes)


def test_every_verdict_says_what_drop_it_can_detect():
    rng = np.random.default_rng(3)
    spec = GateSpec("ndcg@10", margin=0.01, floor=0.05)
    old = rng.uniform(0.3, 0.7, size=40)
    many = evaluate_gate(_snapshot(old), _snapshot(old + rng.normal(0, 0.05, 40)), [spec])
    detects = many.metrics[0].detectable
    # margin + (z_0.95 + z_0.8) * sd / sqrt(40) for sd ~ 0.05: about 0.01 + 0.0196.
    assert 0.02 < detects < 0.04
    few = evaluate_gate(_snapshot(old[:4]), _snapshot(old[:4] - 0.01), [spec])
    assert math.isinf(few.metrics[0].detectable)  # 2**-4 > 0.05: only the floor can fail
    assert "floor only (4 queries)" in render_verdict(few, run_label="r", baseline_label="b")


def test_gate_options_are_checked_before_any_work():
    snap = _snapshot([0.5] * 3)
    with pytest.raises(HarnessError, match="--seed"):
        evaluate_gate(snap, snap, DEFAULT_GATES, seed=-1)
    with pytest.raises(HarnessError, match="no metric to gate"):
        evaluate_gate(snap, snap, ())


def test_parse_specs_defaults_overrides_and_floors():
    assert parse_specs([]) == DEFAULT_GATES
    assert parse_specs(["ndcg@10=0.02"]) == (GateSpec("ndcg@10", 0.02, 0.06),)
    assert parse_specs(["ndcg@10=0.02"], ["ndcg@10=0.1"])[0].floor == 0.1
    with pytest.raises(HarnessError, match="not gated"):
        parse_specs(["ndcg@10=0.02"], ["rbo@10=0.1"])
    with pytest.raises(HarnessError, match="below its margin"):
        parse_specs(["ndcg@10=0.02"], ["ndcg@10=0.01"])
    with pytest.raises(HarnessError, match=">= 0"):
        parse_specs(["ndcg@10=-1"])


def test_holm_matches_the_textbook_step_down():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.001]), [0.5, 0.002])
    assert holm([]).size == 0


def test_sign_flip_test_is_exact_for_small_n_and_reproducible():
    assert sign_flip_pvalue(np.array([-1.0, -2.0, -0.5, -3.0]), alternative="less", seed=0) == (
        pytest.approx(1 / 16)
    )
    assert sign_flip_pvalue(np.zeros(6), alternative="less", seed=0) == 1.0
    assert sign_flip_pvalue(np.array([-0.3]), alternative="less", seed=0) == 0.5
    assert sign_flip_pvalue(np.array([-0.3]), alternative="two-sided", seed=0) == 1.0
    big = np.random.default_rng(0).normal(-0.02, 0.1, size=60)
    assert sign_flip_pvalue(big, alternative="less", seed=3) == sign_flip_pvalue(
        big, alternative="less", seed=3
    )
    assert win_tie_loss(np.array([0.1, 0.0, -0.2, np.nan])) == (1, 1, 1)


def test_baseline_round_trip_keeps_nan(tmp_path, rankgpt_folder):
    out = _run(rankgpt_folder, tmp_path / "run", strategy="identity")
    results = read_results(out)
    written = write_baseline(results, out, tmp_path / "b.json")
    assert math.isnan(written.per_query["kendall_tau"][0])  # one order: no pairs
    assert "NaN" not in (tmp_path / "b.json").read_text()
    again = read_baseline(tmp_path / "b.json")
    assert again.query_ids == written.query_ids
    assert math.isnan(again.per_query["kendall_tau"][0])
    assert baseline_from_results(results, out).to_dict() == written.to_dict()


def test_read_baseline_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"harness_baseline": 99}')
    with pytest.raises(HarnessError, match="not a harness baseline"):
        read_baseline(bad)
    bad.write_text("not json")
    with pytest.raises(HarnessError, match="cannot read baseline"):
        read_baseline(bad)


def test_invariance_uses_the_exact_distinct_ranking_count_not_only_mean_tau():
    # One swap among 1,000 candidates in one of 21 orders moves the mean tau by ~4e-7, inside
    # the tau tolerance; the count of distinct rankings still sees it.
    new = _snapshot([0.5, 0.5], invariant=True)
    new = Baseline(
        **{
            **new.__dict__,
            "per_query": {
                "kendall_tau": (1.0, 1 - 4e-7),
                "ndcg@10": (0.5, 0.5),
                "distinct_rankings": (1.0, 2.0),
            },
        }
    )
    verdict = evaluate_gate(_snapshot([0.5, 0.5]), new, [GateSpec("ndcg@10", 0.01, 0.03)])
    assert not verdict.passed
    assert [q for q, _ in verdict.invariance.violations] == ["q1"]


def test_a_baseline_lacking_a_metric_is_named_as_the_culprit(tmp_path):
    snap = _snapshot([0.5, 0.6, 0.7])
    data = snap.to_dict()
    del data["per_query"]["ndcg@10"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    old = read_baseline(path)
    with pytest.raises(HarnessError, match=rf"{path}: does not record metric 'ndcg@10'"):
        evaluate_gate(old, snap, [GateSpec("ndcg@10", 0.01, 0.03)])


@pytest.mark.parametrize("n", [301, 2000])
def test_sign_flip_pvalue_does_not_depend_on_how_many_patterns_are_drawn_at_once(monkeypatch, n):
    """Memory is bounded by drawing sign patterns in blocks; the p-value is the one-shot one."""
    from scipy.stats import permutation_test

    values = np.random.default_rng(n).normal(0.05, 1.0, size=n)
    monkeypatch.setattr(paired, "BATCH_VALUES", 5 * n)  # blocks of 5 patterns
    blocked = sign_flip_pvalue(values, alternative="less", seed=3)
    keyword = "rng" if "rng" in inspect.signature(permutation_test).parameters else "random_state"
    one_shot = permutation_test(
        (values,),
        lambda x, axis=-1: np.mean(x, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=paired.N_RESAMPLES,
        alternative="less",
        **{keyword: np.random.default_rng(3)},
    ).pvalue
    assert blocked == one_shot


def test_runs_of_different_order_designs_are_not_paired():
    old = _snapshot([0.5, 0.6])
    pinned = replace(old, permutations={**old.permutations, "pin": "relevant@-1"})
    with pytest.raises(HarnessError, match=r"order design --pin: baseline None, run 'relevant@-1'"):
        evaluate_gate(old, pinned, DEFAULT_GATES)


# The order-noise test: drops confined to a few queries ---------------------------------------

DL19_QUERIES = 43


def _with_spread(values, spread, *, perms: int = 5) -> Baseline:
    """A snapshot carrying every default-gated metric and nDCG@10's spread across orders."""
    snap = _snapshot(values)
    n = len(values)
    per_query = {**snap.per_query, "rbo@10": (1.0,) * n, "ndcg@10_std": tuple(spread)}
    return replace(
        snap, per_query=per_query, permutations={**snap.permutations, "random_orders": perms}
    )


def _concentrated(old: np.ndarray, hit: int = 5, points: float = 3.0) -> np.ndarray:
    """``old`` with its first ``hit`` queries losing ``points`` of the mean between them."""
    new = old.copy()
    new[:hit] -= points / 100 * old.size / hit
    return new


def test_a_drop_confined_to_five_of_43_queries_fails_by_the_order_noise_test():
    # The case: a 3-point nDCG@10 drop in 5 of 43 queries, the mean at the floor (not
    # beyond it), from a deterministic reranker (no spread across orders). The sign-flip test
    # cannot see it (5 non-zero differences: p >= 1/32, 0.2 after Holm); the noise is zero,
    # so the mean drop is exact and beyond the margin.
    old = np.random.default_rng(5).uniform(0.4, 0.9, size=DL19_QUERIES)
    zero = np.zeros(DL19_QUERIES)
    verdict = evaluate_gate(_with_spread(old, zero), _with_spread(_concentrated(old), zero))
    ndcg = verdict.metrics[0]
    assert ndcg.drop == pytest.approx(0.03) and not ndcg.below_floor
    assert ndcg.p_holm > 0.05  # the sign-flip test's
    assert not verdict.passed and ndcg.failed_by == ("order_noise",)
    assert ndcg.noise_p == 0.0 and ndcg.noise_se == 0.0
    assert "beyond order noise (order-noise p=0 < 0.05)" in ndcg.reason
    assert ndcg.detectable == pytest.approx(0.01)  # without noise: any drop beyond the margin


def test_a_rerun_like_difference_passes_the_order_noise_test():
    # Two runs of an order-sensitive reranker on different orders: each query's mean over 5
    # orders moves by what its spread across orders allows, and the gate passes.
    rng = np.random.default_rng(11)
    mean = rng.uniform(0.3, 0.7, size=DL19_QUERIES)
    runs = [np.clip(mean[:, None] + rng.normal(0, 0.2, (DL19_QUERIES, 5)), 0, 1) for _ in range(2)]
    old, new = (_with_spread(r.mean(axis=1), r.std(axis=1)) for r in runs)
    verdict = evaluate_gate(old, new)
    ndcg = verdict.metrics[0]
    assert verdict.passed, render_verdict(verdict, run_label="r", baseline_label="b")
    assert ndcg.noise_se > 0 and ndcg.noise_p_holm > 0.05
    # the same drop as the concentrated one, but within this much order noise: not evidence
    lowered = evaluate_gate(old, replace(new, per_query={
        **new.per_query, "ndcg@10": tuple(_concentrated(np.array(new.per_query["ndcg@10"])))
    }))  # fmt: skip
    assert not lowered.metrics[0].significant_order_noise


def test_the_order_noise_test_holds_its_level_on_simulated_reruns():
    """Valid under its null: reruns whose per-order values come from the same distributions
    are significant at most alpha of the time (less: its noise bound is conservative)."""
    rng = np.random.default_rng(2)
    mean = rng.uniform(0.2, 0.8, size=DL19_QUERIES)
    sd = rng.uniform(0.0, 0.25, size=DL19_QUERIES)
    ps = []
    for _ in range(2000):
        a, b = (
            np.clip(mean[:, None] + sd[:, None] * rng.standard_normal((DL19_QUERIES, 5)), 0, 1)
            for _ in range(2)
        )
        test = paired.order_noise_test(
            b.mean(axis=1) - a.mean(axis=1), b.std(axis=1), a.std(axis=1), orders=5, margin=0.0
        )
        ps.append(test.p)
    for level in (0.01, 0.05, 0.2):
        assert np.mean(np.array(ps) < level) <= level


def test_order_noise_test_worked_by_hand():
    from scipy.stats import t

    diff = np.array([-0.1, 0.0, 0.0, 0.0])
    spread = np.array([0.1, 0.0, 0.0, 0.0])
    test = paired.order_noise_test(diff, spread, spread, orders=5, margin=0.01)
    # se_q^2 = (0.1 + 0.1)^2 / 4 = 0.01 for one query: se = 0.1 / 4, df = 4 (one query's)
    assert test.se == pytest.approx(0.025) and test.df == pytest.approx(4.0)
    assert test.p == pytest.approx(t.cdf((-0.025 + 0.01) / 0.025, 4))
    exact = paired.order_noise_test(diff, 0 * spread, 0 * spread, orders=5, margin=0.01)
    assert exact.p == 0.0 and exact.se == 0.0
    at_margin = paired.order_noise_test(diff / 10 * 4, 0 * spread, 0 * spread, orders=5,
                                        margin=0.01)  # fmt: skip
    assert at_margin.p == 1.0  # a mean drop of exactly the margin is within it
    with pytest.raises(ValueError, match="2 or more orders"):
        paired.order_noise_test(diff, spread, spread, orders=1, margin=0.01)


def test_holm_covers_every_test_of_every_metric():
    old = np.random.default_rng(5).uniform(0.4, 0.9, size=DL19_QUERIES)
    spread = np.full(DL19_QUERIES, 0.05)
    verdict = evaluate_gate(_with_spread(old, spread), _with_spread(old - 0.02, spread))
    rows = verdict.metrics
    assert [math.isnan(m.noise_p) for m in rows] == [False, True, True]
    family = [m.p_value for m in rows] + [rows[0].noise_p]
    adjusted = holm(family)
    np.testing.assert_allclose([m.p_holm for m in rows], adjusted[:3])
    assert rows[0].noise_p_holm == pytest.approx(adjusted[3])
    assert "Holm-adjusted across all 4 tests" in render_verdict(
        verdict, run_label="r", baseline_label="b"
    )


def test_the_order_noise_test_says_why_it_does_not_apply():
    old = np.random.default_rng(5).uniform(0.4, 0.9, size=DL19_QUERIES)
    zero = np.zeros(DL19_QUERIES)
    base = _with_spread(old, zero)
    cyclic = {**base.permutations, "strategy": "cyclic"}
    without = replace(base, per_query={k: v for k, v in base.per_query.items() if "std" not in k})
    cases = {
        "no spread across orders recorded": (base, base, 1),  # kendall_tau
        "needs --strategy random": (replace(base, permutations=cyclic),) * 2 + (0,),
        "ndcg@10_std not recorded in both runs": (without, base, 0),
    }
    for why, (old_run, new_run, row) in cases.items():
        m = evaluate_gate(old_run, new_run).metrics[row]
        assert math.isnan(m.noise_p) and why in m.noise_note
        assert verdict_dict(evaluate_gate(old_run, new_run), run_label="r", baseline_label="b")[
            "metrics"
        ][row]["order_noise"] == {"applies": False, "why_not": m.noise_note}


def test_verdict_json_junit_and_table_name_the_order_noise_test():
    old = np.random.default_rng(5).uniform(0.4, 0.9, size=DL19_QUERIES)
    zero = np.zeros(DL19_QUERIES)
    verdict = evaluate_gate(_with_spread(old, zero), _with_spread(_concentrated(old), zero))
    labels = {"run_label": "runs/new", "baseline_label": "b.json"}
    text = render_verdict(verdict, **labels)
    assert "| p sign-flip (Holm) | p order-noise (Holm) |" in text
    ndcg_row = next(line for line in text.splitlines() if line.startswith("| ndcg@10"))
    assert "| <0.0001 (<0.0001) |" in ndcg_row and "order-noise p=0" in ndcg_row
    assert "| n/a |" in next(line for line in text.splitlines() if line.startswith("| rbo@10"))
    data = verdict_dict(verdict, **labels)["metrics"][0]
    assert data["failed_by"] == ["order_noise"] and data["passed"] is False
    assert data["order_noise"] == {"applies": True, "p": 0.0, "p_holm": 0.0, "se": 0.0}
    assert data["p_holm"] > 0.05  # the sign-flip test's, as before
    case = ElementTree.fromstring(verdict_junit(verdict, **labels)).find(".//testcase")
    failure = case.find("failure")
    assert case.get("name") == "ndcg@10" and "order-noise p=0" in failure.get("message")
    assert "order-noise p (Holm) 0.0000" in failure.text
    summary = verdict_markdown(verdict, **labels)
    assert "beyond order noise" in summary and "FAIL" in summary
