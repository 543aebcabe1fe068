"""One writer per run folder: a second writer is refused at once in one line, a lock left by
a killed process is stale and taken over, and readers never need the lock."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.config import RunConfig
from harness.results import lock as lock_module
from harness.results.lock import LOCK_FILE, RunFolderBusy, run_folder_lock
from harness.results.store import RESULTS_FILE, SAMPLES_FILE, read_results
from harness.runner import execute_run, prepare_run
from tests.conftest import wait_for_a_sample, write_rankgpt_folder

cli = CliRunner()
FORMAT_1_RUN = Path(__file__).parent / "fixtures" / "run-format-1"


def _run(data: Path, out: Path, **overrides):
    config = RunConfig(
        reranker="identity", dataset=str(data), perms=3, out=str(out), **overrides
    ).validate()
    return execute_run(prepare_run(config))


def _busy_line(out: Path, pid: int) -> str:
    """The start of the refusal, up to the start time it names."""
    return f"error: {out} is being written by another harness run (pid {pid} on " + (
        f"{socket.gethostname()}, since "
    )


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_a_second_writer_is_refused_at_once_in_one_line(rankgpt_folder, tmp_path):
    out = tmp_path / "run"
    _run(rankgpt_folder, out)  # a finished folder: it holds samples of its own
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    args = ["run", "--reranker", "identity", "--dataset", str(rankgpt_folder), "--perms", "3"]
    with run_folder_lock(out):
        result = cli.invoke(app, [*args, "--out", str(out)])
        assert result.exit_code == 2, result.output
        (line,) = _error_lines(result.output)
        assert line.startswith(_busy_line(out, os.getpid())), line
        assert line.endswith("); wait for it to finish or use another --out"), line
        assert "kept in" not in line and "Traceback" not in result.output  # not its samples
        with pytest.raises(RunFolderBusy, match="is being written by another harness run"):
            _run(rankgpt_folder, out)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before  # neither refused writer wrote anything; the lock file is gone
    assert cli.invoke(app, [*args, "--out", str(out)]).exit_code == 0  # released: it runs


def test_a_lock_on_a_new_folder_leaves_no_trace_when_nothing_was_written(tmp_path):
    out = tmp_path / "runs" / "new"
    with run_folder_lock(out):
        assert (out / LOCK_FILE).is_file()
        stamp = json.loads((out / LOCK_FILE).read_text())
        assert stamp["pid"] == os.getpid() and stamp["host"] == socket.gethostname()
    assert not (tmp_path / "runs").exists()


def test_two_runs_started_on_one_folder_one_is_refused_and_the_other_goes_on(
    rankgpt_folder, tmp_path
):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "harness", "run", "--reranker", "identity", "--dataset",
            str(rankgpt_folder), "--perms", "10000", "--batch-size", "1",
            "--out", str(out)]  # fmt: skip
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples = out / SAMPLES_FILE
    try:
        wait_for_a_sample(first, samples)
        assert first.poll() is None, first.communicate()[0]
        second = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert first.poll() is None  # still writing
    finally:
        first.send_signal(signal.SIGTERM)
        output, _ = first.communicate(timeout=60)
    assert second.returncode == 2, second.stderr
    (line,) = _error_lines(second.stderr)
    assert line.startswith(_busy_line(out, first.pid)), line
    assert "Traceback" not in second.stderr and "corrupt" not in second.stderr
    assert first.returncode == 128 + signal.SIGTERM, output
    lines = samples.read_bytes().splitlines(keepends=True)
    assert lines and all(json.loads(raw)["query_id"] for raw in lines)  # one writer's lines
    assert not (out / LOCK_FILE).exists()  # released and removed on the way out


def test_a_lock_left_by_a_killed_process_does_not_block_a_resume(rankgpt_folder, tmp_path):
    out = tmp_path / "run"
    finished = _run(rankgpt_folder, out)
    samples = out / SAMPLES_FILE
    lines = samples.read_text().splitlines(keepends=True)
    samples.write_text("".join(lines[: len(lines) // 2]))  # an unfinished run ...
    (out / RESULTS_FILE).unlink()
    holder = subprocess.Popen(  # ... whose writer is killed holding the lock
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; "
         "from harness.results.lock import run_folder_lock\n"
         "with run_folder_lock(Path(sys.argv[1])):\n"
         "    print('held', flush=True); time.sleep(600)",
         str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(RunFolderBusy, match=f"pid {holder.pid} "):
        _run(rankgpt_folder, out)
    holder.send_signal(signal.SIGKILL)
    assert holder.wait(timeout=60) == -signal.SIGKILL
    stale = json.loads((out / LOCK_FILE).read_text())
    assert stale["pid"] == holder.pid  # left behind, no longer locked by anyone
    resumed = _run(rankgpt_folder, out)
    assert resumed.counts == finished.counts
    assert samples.read_text().count("\n") == len(lines)
    assert not (out / LOCK_FILE).exists()


def test_readers_never_lock_and_still_refuse_an_unfinished_folder(rankgpt_folder, tmp_path):
    out = tmp_path / "run"
    _run(rankgpt_folder, out)
    baseline = tmp_path / "base.json"
    with run_folder_lock(out):  # a run resuming the finished folder is writing it
        assert read_results(out).counts["samples"] > 0
        result = cli.invoke(app, ["baseline", str(out), "--to", str(baseline)])
        assert result.exit_code == 0, result.output
        result = cli.invoke(app, ["gate", str(out), "--baseline", str(baseline)])
        assert result.exit_code == 0, result.output
        result = cli.invoke(app, ["export", str(out), "--trec", str(tmp_path / "trec")])
        assert result.exit_code == 0, result.output
        (out / RESULTS_FILE).unlink()  # as if it had not finished yet
        for args in (
            ["report", str(out), "--out", str(tmp_path / "report")],
            ["gate", str(out), "--baseline", str(baseline)],
            ["export", str(out), "--trec", str(tmp_path / "trec2")],
        ):
            result = cli.invoke(app, args)
            assert result.exit_code == 2, result.output
            assert _error_lines(result.output) == [
                f"error: {out} is an unfinished run (no {RESULTS_FILE}); rerun `harness run` "
                f"with --out {out} to finish it"
            ]


def test_upgrade_takes_over_a_stale_lock_and_is_refused_by_a_held_one(tmp_path):
    old = tmp_path / "old"
    shutil.copytree(FORMAT_1_RUN, old)
    data = write_rankgpt_folder(tmp_path / "data", candidates=8)
    args = ["upgrade", str(old), "--dataset", str(data)]
    with run_folder_lock(old):
        result = cli.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert _error_lines(result.output)[0].startswith(_busy_line(old, os.getpid()))
    (old / LOCK_FILE).write_text("left by a run killed with kill -9\n")  # present, not locked
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not (old / LOCK_FILE).exists()


def test_without_flock_the_folder_is_written_unlocked(rankgpt_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(lock_module, "fcntl", None)  # Windows
    out = tmp_path / "run"
    with run_folder_lock(out):
        assert not (out / LOCK_FILE).exists()
        assert _run(rankgpt_folder, out).counts["samples"] > 0
