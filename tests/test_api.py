"""The Python API: evaluate/load, function rerankers recorded as themselves, DataFrames."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import harness
from harness.errors import HarnessError
from harness.gates.baseline import baseline_from_results
from harness.gates.gate import evaluate_gate, parse_specs
from harness.rerankers.callable import from_order, from_scores, rebuild_note

REPO = Path(__file__).resolve().parents[1]


def by_number(query: str, docs: list[str]) -> list[float]:
    """Scores by the number in each doc ("doc 7 of query 0" -> -7): order-invariant."""
    return [-float(doc.split()[1]) for doc in docs]


def first_shown(query: str, docs: list[str]) -> list[float]:
    """Scores by shown position: copies its input (maximally order-sensitive)."""
    return [-float(i) for i in range(len(docs))]


def test_a_scoring_function_is_recorded_as_the_reranker(rankgpt_folder, tmp_path):
    run = harness.evaluate(
        harness.from_scores(by_number), dataset=str(rankgpt_folder), perms=4, out=tmp_path / "r"
    )
    recorded = json.loads((tmp_path / "r" / "results.json").read_text())["reranker"]
    assert recorded["name"] == "by_number"
    assert recorded["adapter"] == "callable"
    assert recorded["order_invariant"] is False  # never claimed unless the caller says so
    assert recorded["params"]["function"] == f"{__name__}:by_number"
    assert len(recorded["params"]["source_sha256"]) == 64
    assert recorded["identity"]["function"] == f"{__name__}:by_number"
    # its scores ignore the order, so every stability number is perfect
    assert run.summary.loc["kendall_tau", "value"] == 1.0
    assert list(run.per_query.index) == ["q0", "q1", "q2", "q3"]
    assert run.per_query["ndcg@10"].notna().all()
    samples = run.samples
    assert len(samples) == 4 * 5  # 4 random orders + the identity order per query
    first = samples.iloc[0]
    assert first["ranking"][0] == "q0-d01" and first["label"] == "reference"
    assert {"ndcg@10", "latency_ms", "shown"} <= set(samples.columns)
    again = harness.load(tmp_path / "r")
    assert again.summary.equals(run.summary)


def test_an_order_dependent_function_shows_it(rankgpt_folder, tmp_path):
    run = harness.evaluate(first_shown, dataset=str(rankgpt_folder), perms=6, out=tmp_path / "r")
    assert run.reranker == "first_shown"  # a bare function is taken as a scoring function
    assert run.summary.loc["kendall_tau", "value"] < 0.5
    shown, ranking = run.samples.loc[3, ["shown", "ranking"]]
    assert shown == ranking


def test_a_declared_invariance_is_checked_by_the_gate(rankgpt_folder, tmp_path):
    """Declaring a position-copying function invariant does not make it so: the gate fails
    it on every query that moved."""
    liar = from_scores(first_shown, name="liar", order_invariant=True)
    run = harness.evaluate(liar, dataset=str(rankgpt_folder), perms=4, out=tmp_path / "r")
    assert run.results.reranker.order_invariant is True
    verdict_of = baseline_from_results(run.results, tmp_path / "r")
    verdict = evaluate_gate(verdict_of, verdict_of, parse_specs([]))
    assert verdict.invariance is not None and len(verdict.invariance.violations) == 4
    assert not verdict.passed


def test_an_ordering_function(rankgpt_folder, tmp_path):
    reverse = from_order(lambda query, docs: list(range(len(docs)))[::-1], name="reverse")
    run = harness.evaluate(
        reverse, dataset=str(rankgpt_folder), strategy="identity", out=tmp_path / "r"
    )
    assert run.samples.loc[0, "ranking"][0] == "q0-d12"
    assert run.results.reranker.params["kind"] == "order"


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda q, docs: [1.0], "returned 1 values for 12 docs"),
        (lambda q, docs: [float("nan")] * len(docs), "NaN or infinite"),
        (lambda q, docs: None, "not a sequence"),
    ],
)
def test_bad_function_output_is_one_line_naming_the_query(rankgpt_folder, tmp_path, fn, message):
    with pytest.raises(HarnessError, match=message) as caught:
        harness.evaluate(fn, dataset=str(rankgpt_folder), perms=2, out=tmp_path / "r")
    assert "query 'q0'" in str(caught.value) and "\n" not in str(caught.value)


def test_a_bad_ordering_is_refused(rankgpt_folder, tmp_path):
    dup = from_order(lambda q, docs: [0] * len(docs), name="dup")
    with pytest.raises(HarnessError, match="not each index"):
        harness.evaluate(dup, dataset=str(rankgpt_folder), perms=2, out=tmp_path / "r")


def test_a_preset_can_name_an_importable_function(rankgpt_folder, tmp_path, monkeypatch):
    (tmp_path / "myscores.py").write_text(
        "def score(query, docs):\n    return [len(d) for d in docs]\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    preset = tmp_path / "mine.yaml"
    preset.write_text(
        "name: mine\nadapter: callable\nparams: {function: 'myscores:score', kind: scores}\n",
        encoding="utf-8",
    )
    run = harness.evaluate(str(preset), dataset=str(rankgpt_folder), perms=2, out=tmp_path / "r")
    assert run.results.reranker.identity["function"] == "myscores:score"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nadapter: callable\nparams: {function: 'myscores:nope'}\n")
    with pytest.raises(HarnessError, match="cannot import 'myscores:nope'"):
        harness.evaluate(str(bad), dataset=str(rankgpt_folder), perms=2, out=tmp_path / "b")


def test_a_changed_function_does_not_resume_the_old_run(rankgpt_folder, tmp_path):
    harness.evaluate(by_number, dataset=str(rankgpt_folder), perms=2, out=tmp_path / "r")
    with pytest.raises(HarnessError):
        harness.evaluate(
            from_scores(first_shown, name="by_number"),
            dataset=str(rankgpt_folder),
            perms=2,
            out=tmp_path / "r",
        )


def test_import_harness_stays_light():
    code = (
        "import sys, harness; "
        "print(sorted(m for m in ('numpy', 'pandas', 'torch', 'harness.api') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert callable(harness.evaluate) and callable(harness.from_scores)


def test_the_example_runs_on_dl19_and_records_its_function(dl19_dir, tmp_path):
    out = tmp_path / "example"
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "score_function.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "kendall_tau" in done.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["reranker"]["name"] == "overlap"
    assert results["reranker"]["params"]["function"] == "__main__:overlap"
    assert results["config"]["queries"] == "random:5"
    assert len(results["dataset"]["query_ids"]) == 5
    # the shown-position bonus makes it order-dependent, and the numbers say so
    assert results["summary"]["kendall_tau"]["value"] < 1.0


def test_a_function_runs_locally_and_says_so_for_another_executor(rankgpt_folder, tmp_path):
    with pytest.raises(HarnessError, match="a function runs locally"):
        harness.evaluate(
            harness.from_scores(lambda query, docs: [len(d) for d in docs]),
            dataset=str(rankgpt_folder), executor="ray", out=tmp_path / "run",
        )  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_a_function_nothing_can_import_later_is_recorded_and_warned_about():
    """A lambda (like a function in a script's __main__) cannot be re-imported from its
    recorded module:qualname: the record says so and how to rebuild it, and Python warns."""
    with pytest.warns(UserWarning, match="cannot be imported by a later run: a nested"):
        preset = from_scores(lambda q, docs: [0.0] * len(docs), name="flat").preset()
    assert "to rebuild this reranker" in preset.description
    assert preset.params["function"].endswith("<locals>.<lambda>")

    def in_main(query: str, docs: list[str]) -> list[float]:
        return [0.0] * len(docs)

    in_main.__module__, in_main.__qualname__ = "__main__", "in_main"  # as if run as a script
    with pytest.warns(UserWarning, match=r"__main__:in_main cannot be imported.*\(__main__\)"):
        from_scores(in_main).preset()
    assert rebuild_note(by_number) is None  # importable: tests.test_api:by_number
