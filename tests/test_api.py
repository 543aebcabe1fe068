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
from harness.rerankers.methods.callable import from_order, from_scores, rebuild_note

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


@pytest.mark.parametrize(
    "settings",
    [
        {"strategy": "templates", "templates": "tpl.txt", "count": 2, "depth": 6},
        {"perms": 3, "repeats": 1, "relevance_level": 2, "max_invalid_share": 0.1, "seed": 4},
        {"strategy": "fixed", "pin": "relevant@0", "count": 3, "queries": ["q0", "q2"]},
        {"perms": 6, "target": "kendall_tau=0.2", "min_perms": 4, "batch_size": 2},
    ],
)
def test_a_run_from_python_is_the_run_of_the_same_flags(
    rankgpt_folder, tmp_path, monkeypatch, settings
):
    """Every run setting means the same as a keyword as it does as a flag: the same folder
    name, resolved configuration and hash (harness.evaluate(templates=...) used to raise)."""
    from typer.testing import CliRunner

    from harness.cli import app

    for side in ("cli", "api"):
        (tmp_path / side).mkdir()
        monkeypatch.chdir(tmp_path / side)
        Path("tpl.txt").write_text("[0, null, 2]\n[null, 1, null]\n", encoding="utf-8")
        if side == "api":
            harness.evaluate("identity", dataset=str(rankgpt_folder), **settings)
            continue
        flags = ["run", "--reranker", "identity", "--dataset", str(rankgpt_folder)]
        for name, value in settings.items():
            value = ",".join(value) if isinstance(value, list) else value
            flags += [f"--{name.replace('_', '-')}", str(value)]
        done = CliRunner().invoke(app, flags)
        assert done.exit_code == 0, done.output
    results = {}
    for side in ("cli", "api"):
        [folder] = (tmp_path / side / "runs").iterdir()  # the default folder of the settings
        header = json.loads((folder / "run.json").read_text())
        summary = json.loads((folder / "results.json").read_text())["summary"]
        results[side] = folder.name, header["config_hash"], header["config"], summary["ndcg@10"]
    assert results["api"] == results["cli"]


def test_a_config_file_from_python_with_keywords_over_it(rankgpt_folder, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"reranker: identity\ndataset: {rankgpt_folder}\nperms: 3\nseed: 2\n")
    run = harness.evaluate(config=config, perms=2, out=tmp_path / "r")
    resolved = run.results.config
    assert (resolved["perms"], resolved["seed"], run.reranker) == (2, 2, "identity")
    counted = harness.dry_run(config=str(config), out=tmp_path / "other")
    assert counted.orders == 4 * (3 + 1) and not (tmp_path / "other").exists()


def test_dry_run_takes_evaluates_keywords_and_unknown_ones_fail_before_any_work(
    rankgpt_folder, tmp_path
):
    keywords = {"dataset": str(rankgpt_folder), "perms": 2, "out": tmp_path / "r"}
    execution = {"executor": "local", "workers": None, "log_prompts": True, "worker_cpus": 1}
    assert harness.dry_run("identity", **keywords, **execution).orders == 4 * 3
    with pytest.raises(TypeError, match="unknown option 'perm'; did you mean 'perms'"):
        harness.evaluate("identity", perm=3, out=tmp_path / "r")
    with pytest.raises(HarnessError, match=r"'dry_run'; --dry-run is harness.dry_run\(\)"):
        harness.evaluate("identity", dry_run=True, out=tmp_path / "r")
    with pytest.raises(HarnessError, match=r"evaluate\(\): 'depth' must be an integer"):
        harness.evaluate("identity", depth="5", out=tmp_path / "r")
    assert not (tmp_path / "r").exists()
