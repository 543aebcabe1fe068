"""Progress where no bar can be drawn: periodic one-line progress that a log reader can parse."""

from __future__ import annotations

import io

import pytest
from typer.testing import CliRunner

import harness
from harness.cli import app
from harness.progress import ProgressLines, duration, parse_line


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_tenth_or_every_interval_whichever_comes_first_and_at_the_end():
    clock, stream = Clock(), io.StringIO()
    lines = ProgressLines("m on d", stream, every_s=30.0, clock=clock)
    lines(0, 100, (0, 10))  # before the model loads
    clock.now = 50.0
    lines(0, 100, (0, 10))  # loaded: the rate is the reranking's from here
    for done in range(1, 101):
        clock.now = 50.0 + done  # one order a second
        lines(done, 100, (done // 10, 10))
    parsed = [parse_line(line) for line in stream.getvalue().splitlines()]
    assert [p.done for p in parsed] == list(range(10, 101, 10))  # 10% comes before 30 s
    assert all(p.rate == pytest.approx(1.0) for p in parsed)
    assert parsed[0].eta == "1 min 30 s" and parsed[-1].eta == "0 s"
    assert (parsed[4].queries_done, parsed[4].queries_total) == (5, 10)

    clock.now, stream = 0.0, io.StringIO()
    slow = ProgressLines("m on d", stream, every_s=30.0, clock=clock)
    slow(0, 10_000)
    for done in range(1, 200):
        clock.now = 10.0 * done  # one order every 10 s: a line every 30 s
        slow(done, 10_000)
    parsed = [parse_line(line) for line in stream.getvalue().splitlines()]
    assert [p.done for p in parsed[:3]] == [3, 6, 9] and parsed[0].label == "m on d"


def test_resumed_rate_counts_only_this_invocation_and_lines_parse():
    clock, stream = Clock(), io.StringIO()
    lines = ProgressLines("x", stream, every_s=0.0, clock=clock)
    lines(40, 50)
    clock.now = 5.0
    lines(45, 50)
    line = stream.getvalue().strip()
    assert line == "progress: x: 45/50 orders (90%), 1 orders/s, elapsed 5 s, eta 5 s"
    assert parse_line(line).queries_done is None and parse_line("work: 3 queries") is None
    texts = [duration(s) for s in (59.4, 61, 3 * 3600 + 4 * 60)]
    assert texts == ["59 s", "1 min 1 s", "3 h 4 min"]


def test_a_run_without_a_terminal_prints_parseable_progress_lines(
    rankgpt_folder, tmp_path, monkeypatch
):
    monkeypatch.setenv("HARNESS_PROGRESS_EVERY", "0")  # every batch, so the test is fast
    args = ["run", "--reranker", "identity", "--dataset", str(rankgpt_folder), "--queries", "3"]
    args += ["--perms", "3", "--batch-size", "2", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, args)  # stderr is captured: not a terminal
    assert result.exit_code == 0, result.output
    parsed = [p for p in map(parse_line, result.stderr.splitlines()) if p is not None]
    assert len(parsed) == 6  # 3 queries x 4 orders in batches of 2
    assert [p.done for p in parsed] == [2, 4, 6, 8, 10, 12] and {p.total for p in parsed} == {12}
    assert [p.queries_done for p in parsed] == [0, 1, 1, 2, 2, 3]
    assert {p.label for p in parsed} == {"identity on data"} and parsed[-1].eta == "0 s"
    assert "progress:" not in result.stdout  # the summary on stdout stays clean


@pytest.mark.parametrize(("wanted", "printed"), [("", True), ("0", False), ("1", False)])
def test_harness_progress_env_silences_or_forces_the_bar(monkeypatch, wanted, printed):
    from rich.console import Console

    from harness.cli_support import run_display

    monkeypatch.setenv("HARNESS_PROGRESS", wanted)
    monkeypatch.setenv("HARNESS_PROGRESS_EVERY", "0")
    console = Console(file=io.StringIO(), force_terminal=False)
    with run_display(console, "m on d") as display:
        for done in range(3):
            display.update(done, 2)
    assert ("progress: m on d: 2/2 orders" in console.file.getvalue()) == printed


def test_evaluate_prints_the_same_lines_when_asked(rankgpt_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_PROGRESS_EVERY", "0")
    settings = dict(dataset=str(rankgpt_folder), queries=2, perms=1, batch_size=1)
    harness.evaluate("identity", out=tmp_path / "a", progress=True, **settings)
    parsed = [p for p in map(parse_line, capsys.readouterr().err.splitlines()) if p]
    assert [p.done for p in parsed] == [1, 2, 3, 4] and parsed[-1].queries_done == 2
    seen: list[tuple[int, int]] = []
    callback = lambda d, t: seen.append((d, t))  # noqa: E731 - a user's plain callable
    harness.evaluate("identity", out=tmp_path / "b", progress=callback, **settings)
    assert seen[-1] == (4, 4) and not capsys.readouterr().err
