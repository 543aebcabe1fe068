"""Identity repeats (--repeats): the noise floor beside each stability metric, the new order
designs end to end, and run-folder compatibility."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harness.config import RunConfig
from harness.data.model import Candidate, CandidateSet, TextQuery
from harness.metrics import registry
from harness.metrics.preference import pairwise_preference_instability
from harness.permutations import OrderLabel, plan_permutations
from harness.results.markdown import render_summary
from harness.results.schema import RunResults
from harness.results.store import Sample, read_results
from harness.results.summary import summarize
from harness.runner import _schedule, execute_run, prepare_run
from tests.conftest import write_rankgpt_folder


def _sets_and_qrels(queries: int = 3, n: int = 9):
    sets = []
    for q in range(queries):
        qid = f"q{q}"
        cands = tuple(Candidate(f"{qid}d{i}", f"text {i}", float(-i)) for i in range(n))
        sets.append(CandidateSet(qid, TextQuery(f"query {q}"), cands))
    qrels = {c.query_id: {c.doc_ids[1]: 2, c.doc_ids[4]: 1} for c in sets}
    return sets, qrels


def _samples(sets, output, *, repeats: int, jitter=None, perms: int = 6):
    """Samples of a reranker ``output(shown) -> candidate indices`` under random orders plus
    ``repeats`` identity reruns; ``jitter(rerun) -> output`` replaces the reruns' output."""
    samples = {}
    for cset in sets:
        plan = plan_permutations(
            "random", cset.query_id, len(cset), perms=perms, seed=0, repeats=repeats
        )
        for row, (order, label) in enumerate(zip(plan.orders, plan.labels, strict=True)):
            ranked = output(order) if not (label.is_repeat and jitter) else jitter(label.index)
            ranking = tuple(cset.doc_ids[i] for i in ranked)
            scores = {doc: float(len(ranking) - r) for r, doc in enumerate(ranking)}
            samples[(cset.query_id, row)] = Sample(
                cset.query_id, row, label, tuple(int(i) for i in order), ranking, scores,
                {"latency_ms": 1.0},
            )  # fmt: skip
    return samples


def test_identity_repeats_of_a_deterministic_reranker_give_a_floor_of_exactly_zero():
    sets, qrels = _sets_and_qrels()
    copying = summarize(sets, qrels, _samples(sets, lambda o: o, repeats=3), seed=0)
    floor = copying["noise_floor"]
    assert floor["repeats"] == 3
    entries = floor["summary"]
    assert [name for name in entries] == [s.name for s in registry.with_floor()] + ["score_spread"]
    assert entries["kendall_tau"]["value"] == 1.0
    assert entries["ppi"]["value"] == 0.0
    assert entries["gpi"]["value"] == 0.0
    assert entries["distinct_rankings"]["value"] == 1.0
    assert entries["ndcg@10_range"]["value"] == 0.0
    assert entries["score_spread"]["value"] == 0.0
    # the copying reranker is far outside its floor; repeats are not design orders
    assert entries["kendall_tau"]["within_floor"] is False
    assert entries["ppi"]["within_floor"] is False
    assert copying["summary"]["ppi"]["value"] > 0.5
    assert copying["summary"]["gpi"]["value"] > 0.0
    assert all(row[registry.N_ORDERS] == 6 for row in copying["per_query"].values())
    # without repeats there is no floor section, and the design metrics are the same
    plain = summarize(sets, qrels, _samples(sets, lambda o: o, repeats=0), seed=0)
    assert "noise_floor" not in plain
    assert plain["per_query"]["q0"]["kendall_tau"] == copying["per_query"]["q0"]["kendall_tau"]


def test_an_invariant_reranker_is_within_a_zero_floor():
    sets, qrels = _sets_and_qrels()
    fixed = summarize(sets, qrels, _samples(sets, lambda o: np.arange(9), repeats=2), seed=0)
    # 9 candidates: every top 10 is the whole set, so the top-10 set metrics are undefined
    # in the floor as in the measurement (no verdict on them), not "perfectly stable"
    short_list = {"top10_jaccard", "top10_set_agreement"}
    for spec in registry.with_floor():
        entry = fixed["noise_floor"]["summary"][spec.name]
        if spec.name in short_list:
            assert np.isnan(entry["value"]) and "within_floor" not in entry
        elif spec.name != "best_relevant_rank_var":
            assert entry["within_floor"] is True, spec.name
    assert fixed["summary"]["ppi"]["value"] == 0.0
    assert fixed["summary"]["gpi"]["value"] == 0.0


def test_jitter_under_no_change_of_order_is_measured_like_the_design():
    sets, qrels = _sets_and_qrels()
    swap = np.array([1, 0, *range(2, 9)])

    def jitter(rerun: int) -> np.ndarray:  # every other rerun swaps the top two
        return swap if rerun % 2 else np.arange(9)

    # the "order-sensitive" part is the same jitter: swap the top two for some orders
    def output(order: np.ndarray) -> np.ndarray:
        return swap if order[0] % 2 else np.arange(9)

    samples = _samples(sets, output, repeats=4, jitter=jitter)
    result = summarize(sets, qrels, samples, seed=0)
    section = result["noise_floor"]
    floor = section["summary"]
    # 6 design orders, 5 same-order outputs (order 0 and 4 reruns): blocks of 5
    assert section["matched_orders"] == [5, 5] and section["exact"] is False
    # reruns id, swap, id, swap, id: 4 of the 10 pairs agree on the top item
    assert floor["top1_agreement"]["value"] == pytest.approx(0.4)
    assert floor["distinct_rankings"]["value"] == 2.0
    # PPI of the reruns in the cells of the design's first 5 shown orders
    shown = np.array([samples[("q0", row)].shown for row in range(1, 6)])
    reruns = np.stack([np.arange(9), swap, np.arange(9), swap, np.arange(9)])
    expected = pairwise_preference_instability(shown, reruns)
    assert section["per_query"]["q0"]["ppi"] == pytest.approx(expected)
    assert section["per_query"]["q0"]["design:ppi"] == pytest.approx(
        pairwise_preference_instability(shown, np.stack([output(o) for o in shown]))
    )
    assert floor["score_spread"]["value"] == 1.0  # scores follow the ranking: top two swap
    assert floor["top1_agreement"]["within_floor"] is True
    assert np.isnan(floor["top10_set_agreement"]["value"])  # 9 candidates: undefined
    assert "p" not in floor["top10_set_agreement"]


class GaussianSampler:
    """A seeded sampling reranker (a callable, run through ``harness.evaluate``): each doc's
    score is its merit (the number in its text) plus fresh Gaussian noise on every call, minus
    ``lean`` x its shown position. With ``lean`` 0 it ignores the order: its outputs vary only
    because it samples, as a temperature > 0 model's do."""

    def __init__(self, seed: int, lean: float = 0.0, sigma: float = 2.0) -> None:
        self.rng = np.random.default_rng(seed)
        self.lean = lean
        self.sigma = sigma

    def __call__(self, query: str, docs: list[str]) -> list[float]:
        merit = -np.array([float(doc.split()[1]) for doc in docs])
        noise = self.rng.normal(0.0, self.sigma, len(docs))
        return (merit + noise - self.lean * np.arange(len(docs))).tolist()


def _sampled(tmp_path: Path, sampler: GaussianSampler, repeats: int) -> RunResults:
    import harness
    from harness.rerankers.methods.callable import from_scores

    data = write_rankgpt_folder(tmp_path / "data", queries=12, candidates=12)
    run = harness.evaluate(
        from_scores(sampler, name="sampler"), dataset=str(data), perms=5, repeats=repeats,
        out=tmp_path / f"r{repeats}",
    )  # fmt: skip
    return run.results


@pytest.mark.parametrize("repeats", [2, 5, 20])
def test_an_order_independent_sampler_is_within_its_floor_at_any_number_of_repeats(
    tmp_path, repeats
):
    """The floor measures what the design measures: the old one grew with R (PPI 0.17 /
    0.42 / 0.50 at R = 2 / 5 / 40) and flagged tau, PPI and GPI "outside" at R = 2 by
    comparing two point estimates. The verdict is a 5% family-wise test, so a fixed seed
    could in principle fall in the 5%; these do not."""
    results = _sampled(tmp_path, GaussianSampler(seed=0), repeats)
    section = results.noise_floor
    assert section["method"] == "paired" and section["exact"] is False
    assert section["matched_orders"] == [min(5, repeats + 1)] * 2
    tested = {m: e for m, e in section["summary"].items() if "p_holm" in e}
    assert len(tested) == len(registry.with_floor())  # 12 candidates: every one is defined
    assert [m for m, e in tested.items() if not e["within_floor"]] == []
    # the same quantity on both sides: the sampler's PPI, not one that grows with R
    ppi = section["summary"]["ppi"]
    assert abs(ppi["value"] - ppi["design"]) < 0.05
    summary = render_summary(results)
    assert "the floor is the reranker's own variability" in summary
    assert ", outside" not in summary


def test_an_order_sensitive_sampler_is_outside_its_floor(tmp_path):
    results = _sampled(tmp_path, GaussianSampler(seed=0, lean=1.0), repeats=2)
    floor = results.noise_floor["summary"]
    for metric in ("kendall_tau", "spearman", "ppi", "gpi", "rbo@10"):
        assert floor[metric]["within_floor"] is False, metric
        assert floor[metric]["excess_ci95"][0] > 0, metric
    assert "kendall_tau" in render_summary(results).split("Within the floor here")[0]


def test_a_floor_written_before_the_paired_test_still_reads(rankgpt_folder, tmp_path):
    _run(rankgpt_folder, tmp_path / "run", perms=4, repeats=2)
    path = tmp_path / "run" / "results.json"
    data = json.loads(path.read_text())
    old = data["noise_floor"]
    data["noise_floor"] = {
        "repeats": old["repeats"],
        "summary": {
            name: {k: v for k, v in entry.items() if k in ("value", "ci95", "n")}
            | ({"within_floor": True} if name != "score_spread" else {})
            for name, entry in old["summary"].items()
        },
        "per_query": {
            q: {m: row[m] for m in old["summary"]} for q, row in old["per_query"].items()
        },
    }
    path.write_text(json.dumps(data))
    results = read_results(tmp_path / "run")
    assert not results.floor_tested
    assert results.floor("kendall_tau")["value"] == 1.0
    summary = render_summary(results)
    assert "written before the paired floor test" in summary
    assert ", within" not in summary  # its point comparison is not shown as a verdict


def _run(folder: Path, out: Path, **overrides) -> RunResults:
    config = RunConfig(
        reranker=overrides.pop("reranker", "first-stage"), dataset=str(folder), out=str(out),
        **overrides,
    ).validate()  # fmt: skip
    return execute_run(prepare_run(config))


def test_first_stage_with_repeats_end_to_end(rankgpt_folder, tmp_path):
    results = _run(rankgpt_folder, tmp_path / "run", perms=4, repeats=2)
    assert results.noise_floor["repeats"] == 2
    assert results.floor("kendall_tau")["value"] == 1.0
    assert results.floor("kendall_tau")["within_floor"] is True
    assert results.summary["ppi"].value == 0.0
    assert results.summary["gpi"].value == 0.0
    assert results.summary["tie_rate"].value == 0.0
    assert np.isnan(results.summary["parse_repair_rate"].value)
    summary = render_summary(results)
    assert "noise floor" in summary and "Within the floor here: ndcg@10_std" in summary
    loaded = read_results(tmp_path / "run")
    written = loaded.to_dict()["noise_floor"]
    assert written == json.loads(json.dumps(written))  # plain JSON
    assert loaded.noise_floor == results.noise_floor  # read back as computed
    assert loaded.floor("ppi")["value"] == 0.0
    assert loaded.counts["samples"] == 4 * (4 + 1 + 2)


def test_runs_without_new_options_keep_their_config_hash(rankgpt_folder, tmp_path):
    config = RunConfig(reranker="identity", dataset=str(rankgpt_folder), perms=3).validate()
    prepared = prepare_run(config)
    for key in ("count", "pin", "templates", "repeats"):
        assert key not in prepared.header.config
    with_repeats = prepare_run(RunConfig(**{**config.to_dict(), "repeats": 1}).validate())
    assert with_repeats.header.config_hash != prepared.header.config_hash
    assert with_repeats.run_dir.name.endswith("r1-s0")


@pytest.mark.parametrize(
    "options",
    [
        {"strategy": "fixed", "pin": "relevant@-1", "count": 5, "repeats": 2},
        {"strategy": "sweep", "count": 2},
        {"strategy": "templates", "count": 3},
    ],
)
def test_new_designs_resume_bit_identically(rankgpt_folder, tmp_path, options):
    if options["strategy"] == "templates":
        templates = tmp_path / "orders.jsonl"
        templates.write_text("[null, null, 0]\n[11, null]\n")
        options = {**options, "templates": str(templates)}
    out = tmp_path / "run"
    clean = _run(rankgpt_folder, out, reranker="identity", batch_size=3, **options)
    if options["strategy"] == "fixed":
        assert "pin relevant@-1, 5 completions + identity reference + 2 identity repeats" in (
            render_summary(clean)
        )
    samples = out / "samples.jsonl"
    lines = samples.read_text().splitlines(keepends=True)
    samples.write_text("".join(lines[: len(lines) // 2]))
    resumed = _run(rankgpt_folder, out, reranker="identity", batch_size=3, **options)
    stable = ("summary", "per_query", "per_order", "position_bias", "noise_floor", "config_hash")
    a, b = clean.to_dict(), resumed.to_dict()
    for key in stable:
        assert _drop_latency(a.get(key)) == _drop_latency(b.get(key)), key
    by_key = {(s["query_id"], s["order_index"]): s for s in map(json.loads, lines)}
    again = [json.loads(line) for line in samples.read_text().splitlines()]
    for sample in again:  # the same labels and shown orders, wherever the row was reranked
        old = by_key[(sample["query_id"], sample["order_index"])]
        assert (sample["label"], sample["shown"]) == (old["label"], old["shown"])
        OrderLabel.parse(sample["label"])


def _drop_latency(value):
    if isinstance(value, dict):
        return {k: _drop_latency(v) for k, v in value.items() if not k.startswith("latency")}
    return value


def test_repeats_are_spread_over_batches():
    plan = plan_permutations("random", "q", 5, perms=8, seed=0, repeats=2)
    rows = list(range(len(plan)))
    order = _schedule(plan, rows)
    assert sorted(order) == rows
    repeat_rows = [i for i, row in enumerate(order) if plan.labels[row].is_repeat]
    assert repeat_rows == [3, 7]  # 9 other rows: one rerun after every third of them
    batches = [order[i : i + 3] for i in range(0, len(order), 3)]
    assert [b for b in batches if 0 in b] != [b for b in batches if 9 in b]


def test_the_report_shows_each_stability_metric_beside_its_floor(rankgpt_folder, tmp_path):
    from harness.report.build import write_report

    floored = tmp_path / "floored"
    _run(rankgpt_folder, floored, reranker="identity", perms=4, repeats=2)
    plain = tmp_path / "plain"
    _run(rankgpt_folder, plain, reranker="first-stage", perms=4)
    files = write_report([floored, plain], tmp_path / "report")
    md = files.markdown.read_text(encoding="utf-8")
    html = files.html.read_text(encoding="utf-8")
    for text in ("Stability and its noise floor", "noise floor 1.0000 [1.0000, 1.0000], outside"):
        assert text in md and text in html
    assert "| ppi | pairwise preference instability" in md
    # the identity control copies its input: far above a zero floor
    section = md.split("### Stability and its noise floor")[1].split("###")[0]
    assert "| gpi |" in section and "floor 0.0000 [0.0000, 0.0000], outside" in section
    summary = (floored / "summary.md").read_text(encoding="utf-8")
    assert "| metric | value | 95% CI | noise floor | what it shows |" in summary
    assert "Noise floor: the first-stage order shown 3 times" in summary


def test_parse_repair_rate_counts_repaired_design_orders():
    sets, qrels = _sets_and_qrels(queries=2)
    samples = _samples(sets, lambda o: o, repeats=0, perms=4)
    statuses = ["ok", "missing", "ok", "wrong_format", "repetition"]  # rows 0..4, row 0 reference
    for key, sample in list(samples.items()):
        facts = {**sample.facts, "parse_status": statuses[sample.order_index]}
        samples[key] = replace(sample, facts=facts)
    result = summarize(sets, qrels, samples, seed=0)
    # the design is rows 1..4 (the reference is left out): 3 of 4 needed a repair
    assert result["summary"]["parse_repair_rate"]["value"] == pytest.approx(0.75)
    assert result["parse_status"]["random"]["ok"] == pytest.approx(0.25)
