"""--queries as ids, @file and a seeded sample; --model; the gate's machine-readable verdicts;
help text that keeps its defaults."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.rerankers.model_override import split_revision, with_model
from harness.rerankers.registry import resolve_preset
from harness.runner import prepare_run
from tests.conftest import write_rankgpt_folder

cli = CliRunner()


def _prepare(folder: Path, **settings):
    config = RunConfig(reranker=settings.pop("reranker", "identity"), dataset=str(folder))
    return prepare_run(RunConfig(**(config.to_dict() | {"perms": 2, **settings})).validate())


def test_queries_by_id_keep_the_dataset_order(rankgpt_folder):
    prepared = _prepare(rankgpt_folder, queries="q3,q1")
    assert prepared.header.dataset.query_ids == ("q1", "q3")
    assert prepared.header.config["queries"] == "q3,q1"
    assert len(prepared.header.config["query_ids_sha256"]) == 64
    assert "q2ids-" in str(prepared.run_dir)


def test_queries_from_a_file_name_the_bad_line(rankgpt_folder, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("# my subset\nq2\n\nq0  # the first\n", encoding="utf-8")
    assert _prepare(rankgpt_folder, queries=f"@{ids}").header.dataset.query_ids == ("q0", "q2")
    ids.write_text("q2\nq9\n", encoding="utf-8")
    with pytest.raises(HarnessError, match=rf"{ids}:2: no rerankable query 'q9'"):
        _prepare(rankgpt_folder, queries=f"@{ids}")
    ids.write_text("q2\nq2\n", encoding="utf-8")
    with pytest.raises(HarnessError, match=rf"{ids}:2: query 'q2' is listed twice \({ids}:1\)"):
        _prepare(rankgpt_folder, queries=f"@{ids}")


def test_a_random_sample_is_seeded_and_recorded(tmp_path):
    folder = write_rankgpt_folder(tmp_path / "data", queries=12, candidates=5)
    picks = [
        _prepare(folder, queries="random:4", seed=s).header.dataset.query_ids for s in (0, 0, 1)
    ]
    assert picks[0] == picks[1] and picks[0] != picks[2]
    assert len(picks[0]) == 4 and list(picks[0]) == sorted(picks[0], key=lambda q: int(q[1:]))
    prepared = _prepare(folder, queries="random:4")
    assert prepared.header.config["queries"] == "random:4"
    with pytest.raises(HarnessError, match="only 12 rerankable queries"):
        _prepare(folder, queries="random:13")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("random:0", "random:K needs"), ("q1,,q2", "an empty id"), ("@/nope/ids.txt", "no such file")],
)
def test_bad_query_selections_are_one_line(rankgpt_folder, value, fragment):
    result = cli.invoke(
        app, ["run", "--reranker", "identity", "--dataset", str(rankgpt_folder), "--queries", value]
    )
    assert result.exit_code == 2 and fragment in result.output, result.output


def test_queries_as_a_number_is_still_the_first_n(rankgpt_folder, tmp_path):
    out = tmp_path / "r"
    result = cli.invoke(
        app,
        ["run", "--reranker", "identity", "--dataset", str(rankgpt_folder), "--queries", "2",
         "--perms", "2", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["queries"] == 2 and results["dataset"]["query_ids"] == ["q0", "q1"]


def test_model_override_sets_model_and_revision(rankgpt_folder):
    assert split_revision("Qwen/Qwen2.5-7B-Instruct@abc123") == (
        "Qwen/Qwen2.5-7B-Instruct",
        "abc123",
    )
    assert split_revision("models/x@y.gguf") == ("models/x@y.gguf", None)
    preset = with_model(resolve_preset("lft"), "HuggingFaceTB/SmolLM2-360M-Instruct@main")
    assert preset.params["model"] == "HuggingFaceTB/SmolLM2-360M-Instruct"
    assert preset.params["revision"] == "main"
    prepared = _prepare(rankgpt_folder, reranker="lft", model="org/name@rev")
    assert prepared.header.reranker.params["model"] == "org/name"
    assert prepared.header.config["model"] == "org/name@rev"
    plain = _prepare(rankgpt_folder, reranker="lft")
    assert "model" not in plain.header.config  # earlier runs keep their config hash
    assert plain.header.config_hash != prepared.header.config_hash
    assert "morg_name@rev" in str(prepared.run_dir)


def test_model_override_of_a_reranker_without_a_model_is_refused(rankgpt_folder):
    result = cli.invoke(
        app,
        ["run", "--reranker", "identity", "--dataset", str(rankgpt_folder), "--model", "x/y"],
    )
    assert result.exit_code == 2 and "loads no model of its own" in result.output


def test_run_help_shows_every_default():
    text = " ".join(cli.invoke(app, ["run", "--help"]).output.split())  # unwrapped
    for default in ("[default: movielens-100k]", "[default: 20]", "[default: random]",
                    "[default: cpu]", "[default: chosen per reranker: 4;",
                    "[default: the dataset's]"):  # fmt: skip
        assert default in text, default
    assert "<bool>" not in text and "{run_dir}" not in text
    gate_help = " ".join(cli.invoke(app, ["gate", "--help"]).output.split())
    assert "{run_dir}" not in gate_help and "[default: 0.05]" in gate_help


@pytest.fixture(scope="module")
def gate_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    data = write_rankgpt_folder(root / "data", queries=6, candidates=8)
    for name, reranker in (("fs", "first-stage"), ("id", "identity")):
        result = cli.invoke(
            app,
            ["run", "--reranker", reranker, "--dataset", str(data), "--perms", "3",
             "--out", str(root / name)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    baseline = root / "fs.json"
    assert cli.invoke(app, ["baseline", str(root / "fs"), "--to", str(baseline)]).exit_code == 0
    return root, baseline


def test_gate_writes_json_junit_and_markdown(gate_runs, tmp_path, monkeypatch):
    root, baseline = gate_runs
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    files = {k: tmp_path / f"verdict.{k}" for k in ("json", "xml", "md")}
    for run, code in (("fs", 0), ("id", 1)):
        result = cli.invoke(
            app,
            ["gate", str(root / run), "--baseline", str(baseline), "--json", str(files["json"]),
             "--junit", str(files["xml"]), "--markdown", str(files["md"])],
        )  # fmt: skip
        assert result.exit_code == code, result.output
        verdict = json.loads(files["json"].read_text())
        assert verdict["passed"] is (code == 0)
        failed = [m["metric"] for m in verdict["metrics"] if not m["passed"]]
        if not verdict.get("order_invariance", {"passed": True})["passed"]:
            failed.append("order invariance (declared)")  # the baseline's declaration
        suite = ElementTree.parse(files["xml"]).getroot().find("testsuite")
        assert suite is not None
        cases = suite.findall("testcase")
        assert [c.get("name") for c in cases][:3] == ["ndcg@10", "kendall_tau", "rbo@10"]
        assert [c.get("name") for c in cases if c.find("failure") is not None] == failed
        assert int(suite.get("failures")) == len(failed)
        assert ("PASS" if code == 0 else "FAIL") in files["md"].read_text()
    assert "kendall_tau" in failed  # the last verdict: identity against first-stage
    appended = summary.read_text()
    assert appended.startswith("earlier step\n") and appended.count("#### harness gate") == 2
