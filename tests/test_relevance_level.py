"""The relevance level of binary metrics: declared by dataset cards (TREC DL: grade >= 2),
overridden by --relevance-level, recorded in the run folder, shown beside MRR in every output,
and refused by the gate when run and baseline differ."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import harness
from harness.cli import app
from harness.config import RunConfig
from harness.data.registry import load_card, resolve_card
from harness.errors import HarnessError
from harness.gates.baseline import Baseline, baseline_from_results, read_baseline
from harness.gates.gate import GateSpec, check_compatible, evaluate_gate, render_verdict
from harness.metrics.effectiveness import effectiveness
from harness.report.load import load_run
from harness.results.markdown import render_summary
from harness.results.store import read_results
from harness.runner import execute_run, prepare_run
from tests.conftest import DL19_DIR, REPO_ROOT, write_rankgpt_folder

cli = CliRunner()
pytrec_eval = pytest.importorskip("pytrec_eval")
FORMAT_2_RUN = Path(__file__).parent / "fixtures" / "run-format-2-probabilities"


def pytrec_mrr10(qrels, rankings, level: int) -> list[float]:
    """trec_eval's recip_rank over the top 10 at ``-l level``, one value per ranking."""
    values = []
    for qid, docs in rankings:
        run = {qid: {doc: float(len(docs) - r) for r, doc in enumerate(docs[:10])}}
        evaluator = pytrec_eval.RelevanceEvaluator(
            {qid: qrels[qid]}, {"recip_rank"}, relevance_level=level
        )
        values.append(evaluator.evaluate(run)[qid]["recip_rank"])
    return values


@pytest.mark.parametrize("level", [1, 2, 3])
def test_binary_metrics_count_grades_from_the_level_as_trec_eval_does(level):
    rng = np.random.default_rng(level)
    docs = [f"d{i}" for i in range(30)]
    qrels = {
        f"q{q}": {d: int(g) for d, g in zip(docs, rng.integers(0, 4, 30), strict=True)}
        for q in range(6)
    }
    qrels["q0"] = {"d0": 1, "d1": 0}  # nothing at grade 2: MRR 0 at levels 2 and 3, as trec_eval
    rankings = [(q, list(rng.permutation(docs))) for q in qrels for _ in range(3)]
    out = effectiveness(qrels, rankings, ["mrr@10", "ndcg@10"], relevance_level=level)
    np.testing.assert_allclose(out["mrr@10"], pytrec_mrr10(qrels, rankings, level))
    # nDCG's gain is the grade: no level changes it
    graded = effectiveness(qrels, rankings, ["ndcg@10"])["ndcg@10"]
    np.testing.assert_array_equal(out["ndcg@10"], graded)
    explicit = effectiveness(qrels, rankings, [f"mrr@10-l{level}"])[f"mrr@10-l{level}"]
    np.testing.assert_array_equal(out["mrr@10"], explicit)


def test_the_trec_dl_cards_declare_level_2_and_the_others_1(tmp_path):
    assert resolve_card("msmarco-dl19").relevance_level == 2
    assert resolve_card("irds-dl19").relevance_level == 2
    for name in ("movielens-100k", "beir-scifact", "llmrank-games-6k"):
        assert resolve_card(name).relevance_level == 1
    bad = tmp_path / "bad.yaml"
    text = (REPO_ROOT / "datasets" / "msmarco-dl19.yaml").read_text()
    bad.write_text(text.replace("relevance_level: 2", "relevance_level: two"))
    with pytest.raises(HarnessError, match="'relevance_level' must be an integer >= 1") as error:
        load_card(bad)
    assert "\n" not in str(error.value)


def test_a_level_below_1_or_above_every_grade_is_refused_in_one_line(tmp_path):
    data = write_rankgpt_folder(tmp_path / "data", queries=3, candidates=6)  # grades 1 to 3
    with pytest.raises(HarnessError, match="--relevance-level must be at least 1"):
        RunConfig(reranker="identity", dataset=str(data), relevance_level=0).validate()
    result = cli.invoke(
        app, ["run", "--reranker", "identity", "--dataset", str(data), "--relevance-level", "4"]
    )
    assert result.exit_code == 2
    assert "no query has a judgment at relevance level 4 (grades go up to 3)" in result.output
    assert "Traceback" not in result.output


def test_dl19_first_stage_mrr_at_the_cards_level_is_trec_dls_0_7024(dl19_dir, tmp_path):
    """`harness run --reranker first-stage --dataset msmarco-dl19` reads MRR@10 at grade >= 2,
    TREC DL's convention: BM25's 0.7024, computed here again with pytrec_eval (trec_eval -l 2)
    from the candidate file; --relevance-level 1 gives trec_eval's default, 0.8233."""
    raw = json.loads((DL19_DIR / "bm25_top100.rankgpt.json").read_text())
    qrels: dict[str, dict[str, int]] = {}
    for line in (DL19_DIR / "qrels.txt").read_text().splitlines():
        qid, _, doc, grade = line.split()
        qrels.setdefault(qid, {})[doc] = int(grade)
    bm25 = [(str(e["hits"][0]["qid"]), [str(h["docid"]) for h in e["hits"]]) for e in raw]
    expected = {level: float(np.mean(pytrec_mrr10(qrels, bm25, level))) for level in (1, 2)}
    assert round(expected[2], 4) == 0.7024 and round(expected[1], 4) == 0.8233

    def run(out: str, *flags: str):
        args = ["run", "--reranker", "first-stage", "--dataset", "msmarco-dl19", "--perms", "2"]
        result = cli.invoke(app, [*args, *flags, "--out", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
        return result.output, read_results(tmp_path / out)

    printed, at_card = run("card")
    assert at_card.relevance_level == 2 and at_card.config["relevance_level"] == 2
    assert at_card.summary_value("mrr@10") == pytest.approx(expected[2], abs=1e-12)
    assert f"| mrr@10 (rel ≥ 2) | {expected[2]:.4f} |" in printed  # the CLI table
    assert "| mrr@10 (rel ≥ 2) | 0.7024 |" in (tmp_path / "card" / "summary.md").read_text()
    assert (
        json.loads((tmp_path / "card" / "run.json").read_text())["config"]["relevance_level"] == 2
    )
    assert at_card.summary_value("ndcg@10") == pytest.approx(0.5058, abs=5e-5)

    printed, at_one = run("one", "--relevance-level", "1")
    assert at_one.summary_value("mrr@10") == pytest.approx(expected[1], abs=1e-12)
    assert "| mrr@10 (rel ≥ 1) | 0.8233 |" in printed
    assert "relevance_level" not in at_one.config  # level 1 is left out: earlier hashes hold
    assert at_one.header.config_hash != at_card.header.config_hash
    assert at_one.summary_value("ndcg@10") == at_card.summary_value("ndcg@10")
    # resuming the folder at another level is refused, naming the setting
    again = cli.invoke(
        app,
        ["run", "--reranker", "first-stage", "--dataset", "msmarco-dl19", "--perms", "2",
         "--relevance-level", "1", "--out", str(tmp_path / "card")],
    )  # fmt: skip
    assert again.exit_code == 2 and "relevance_level: 2 -> 1" in again.output


def test_the_python_api_takes_and_reports_the_level(tmp_path):
    data = write_rankgpt_folder(tmp_path / "data", queries=3, candidates=12)
    one = harness.evaluate("identity", dataset=str(data), perms=3, out=tmp_path / "one")
    two = harness.evaluate(
        "identity", dataset=str(data), perms=3, out=tmp_path / "two", relevance_level=2
    )
    assert (one.relevance_level, two.relevance_level) == (1, 2)
    assert two.summary.loc["mrr@10", "rel_level"] == 2
    assert two.summary.loc["ndcg@10", "rel_level"] != two.summary.loc["ndcg@10", "rel_level"]
    qrels = {q: dict(r.qrels) for q, r in load_run(tmp_path / "two").queries.items()}
    samples = two.samples
    rankings = [(q, list(r)) for q, r in zip(samples.query_id, samples.ranking, strict=True)]
    # every order's MRR@10 at grade >= 2 is trec_eval's -l 2
    np.testing.assert_allclose(samples["mrr@10"], pytrec_mrr10(qrels, rankings, 2))
    assert two.summary.loc["mrr@10", "value"] < one.summary.loc["mrr@10", "value"]
    assert two.summary.loc["ndcg@10", "value"] == one.summary.loc["ndcg@10", "value"]


def test_the_best_relevant_rank_counts_relevance_from_the_level_too(tmp_path):
    """q0 holds a grade-1 candidate at first-stage rank 3 and a grade-3 one at rank 6: at
    level 1 the best relevant candidate is at rank 3 (MRR 1/3), at level 2 at rank 6."""
    data = write_rankgpt_folder(tmp_path / "data", queries=1, candidates=12)
    (data / "qrels.txt").write_text("q0 0 q0-d03 1\nq0 0 q0-d06 3\nq0 0 q0-d01 0\n")
    runs = {
        level: execute_run(
            prepare_run(
                RunConfig(
                    reranker="first-stage", dataset=str(data), perms=2, relevance_level=level,
                    out=str(tmp_path / f"l{level}"),
                ).validate()
            )
        )
        for level in (1, 2)
    }  # fmt: skip
    assert runs[1].vector("best_relevant_rank_mean") == {"q0": 3.0}
    assert runs[2].vector("best_relevant_rank_mean") == {"q0": 6.0}
    assert runs[1].vector("mrr@10") == {"q0": pytest.approx(1 / 3)}
    assert runs[2].vector("mrr@10") == {"q0": pytest.approx(1 / 6)}
    assert runs[1].vector("ndcg@10") == runs[2].vector("ndcg@10")


def test_a_run_folder_written_before_levels_reads_as_level_1(tmp_path):
    old = tmp_path / "old"
    shutil.copytree(FORMAT_2_RUN, old)
    results = read_results(old)
    assert "relevance_level" not in results.config and results.relevance_level == 1
    assert "| mrr@10 (rel ≥ 1) |" in render_summary(results)
    baseline = baseline_from_results(results)
    assert baseline.relevance_level == 1
    legacy = read_baseline(REPO_ROOT / "reports" / "baselines" / "ci-movielens-invarirank.json")
    assert "relevance_level" not in legacy.dataset and legacy.relevance_level == 1


def test_the_gate_refuses_run_and_baseline_at_different_levels_in_one_line(tmp_path):
    data = write_rankgpt_folder(tmp_path / "data", queries=4, candidates=12)
    folders = {}
    for level in (1, 2):
        config = RunConfig(
            reranker="first-stage", dataset=str(data), perms=3, relevance_level=level,
            out=str(tmp_path / f"l{level}"),
        ).validate()  # fmt: skip
        execute_run(prepare_run(config))
        folders[level] = tmp_path / f"l{level}"
    base = tmp_path / "b1.json"
    assert cli.invoke(app, ["baseline", str(folders[1]), "--to", str(base)]).exit_code == 0
    assert json.loads(base.read_text())["dataset"]["relevance_level"] == 1
    result = cli.invoke(app, ["gate", str(folders[2]), "--baseline", str(base)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "not comparable" in lines[0]
    assert "relevance level of binary metrics (--relevance-level): baseline 1, run 2" in lines[0]
    # the same level passes, and its verdict names the level beside a gated MRR
    ok = cli.invoke(
        app, ["gate", str(folders[1]), "--baseline", str(base), "--max-drop", "mrr@10=0.01"]
    )
    assert ok.exit_code == 0, ok.output
    assert "| mrr@10 (rel ≥ 1) ↑ |" in ok.output
    # a baseline written before levels (no dataset.relevance_level) meant 1
    old = json.loads(base.read_text())
    del old["dataset"]["relevance_level"]
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps(old))
    assert cli.invoke(app, ["gate", str(folders[1]), "--baseline", str(legacy)]).exit_code == 0
    with pytest.raises(HarnessError, match="baseline 1, run 2"):
        check_compatible(read_baseline(legacy), baseline_from_results(read_results(folders[2])))


def test_the_report_shows_the_level_and_compares_mrr_only_at_one_level(tmp_path):
    data = write_rankgpt_folder(tmp_path / "data", queries=4, candidates=12)
    for name, level in (("a", 1), ("b", 2), ("c", 2)):
        execute_run(
            prepare_run(
                RunConfig(
                    reranker="identity", dataset=str(data), perms=3, relevance_level=level,
                    out=str(tmp_path / name),
                ).validate()
            )
        )  # fmt: skip
    out = tmp_path / "mixed"
    args = ["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]
    assert cli.invoke(app, args).exit_code == 0
    text = out.with_suffix(".md").read_text()
    assert "| relevance level (binary metrics) | grade ≥ 1 | grade ≥ 2 |" in text
    mrr_row = next(line for line in text.splitlines() if line.startswith("| mrr@10 |"))
    assert "(rel ≥ 1)" in mrr_row and "(rel ≥ 2)" in mrr_row
    assert "mrr@10 compared only between runs at the same relevance level" in text
    assert "| mrr@10 (rel" not in text.split("## Comparison")[1].split("##")[0]
    comparison = text.split("## Comparison")[1].split("##")[0]
    assert "| ndcg@10 |" in comparison  # nDCG is graded: compared whatever the level
    same = tmp_path / "same"
    args = ["report", str(tmp_path / "b"), str(tmp_path / "c"), "--out", str(same)]
    assert cli.invoke(app, args).exit_code == 0
    text = same.with_suffix(".md").read_text()
    comparison = text.split("## Comparison")[1].split("##")[0]
    assert "| mrr@10 (rel ≥ 2) |" in comparison
    assert "| mrr@10 (rel ≥ 2) | effectiveness |" in text  # the headline row
    html = same.with_suffix(".html").read_text()
    assert "mrr@10 (rel ≥ 2)" in html


def test_the_gate_verdict_names_the_level_of_a_gated_binary_metric():
    def snapshot(level: int):
        ids = ("q0", "q1", "q2")
        return Baseline(
            query_ids=ids,
            per_query={"mrr@10": (1.0, 0.5, 0.25), "kendall_tau": (1.0,) * 3},
            reranker={"name": "r"},
            dataset={"name": "d", "fingerprint": "f", "depth": None, "relevance_level": level},
            permutations={"strategy": "random", "random_orders": 5, "seed": 0},
            config_hash="c",
        )

    verdict = evaluate_gate(snapshot(2), snapshot(2), [GateSpec("mrr@10", 0.01, 0.03)])
    assert verdict.passed
    assert "| mrr@10 (rel ≥ 2) ↑ |" in render_verdict(verdict, run_label="r", baseline_label="b")
    with pytest.raises(HarnessError, match="baseline 2, run 1"):
        evaluate_gate(snapshot(2), snapshot(1), [GateSpec("ndcg@10", 0.01, 0.03)])
    assert not math.isnan(verdict.metrics[0].p_holm)


def test_sweep_and_pin_move_the_candidates_relevant_at_the_run_level(tmp_path):
    """At level 2 (TREC DL) "the relevant" candidate of a design is one judged 2 or more, as
    MRR counts it, not any grade-1 one."""
    data = write_rankgpt_folder(tmp_path / "data", queries=1, candidates=6)
    (data / "qrels.txt").write_text("q0 0 q0-d02 1\nq0 0 q0-d04 2\n", encoding="utf-8")

    def plan(level: int, **options):
        config = RunConfig(
            reranker="identity", dataset=str(data), relevance_level=level,
            out=str(tmp_path / f"l{level}-{options['strategy']}"), **options,
        ).validate()  # fmt: skip
        return next(prepare_run(config).plans())

    def moved(plan) -> list[int]:
        return sorted({label.item for label in plan.labels if label.item is not None})

    assert moved(plan(1, strategy="sweep")) == [1, 3]  # grades 1 and 2
    assert moved(plan(2, strategy="sweep")) == [3]  # grade 2 only
    assert moved(plan(1, strategy="fixed", count=2)) == [1]  # relevant@0: the first, grade 1
    pinned = plan(2, strategy="fixed", count=2)
    assert moved(pinned) == [3]
    assert all(o[0] == 3 for o, lab in zip(pinned.orders, pinned.labels, strict=True) if lab.item)
