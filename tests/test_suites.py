"""Benchmark suites: suite files, `harness suite run` (resumable after kill -9), scorecards that
merge across processes into one leaderboard, the per-task gate, and the leaderboard in a real
browser. Cheap rerankers (identity, first-stage) on a small RankGPT folder keep it fast."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import HarnessError
from harness.suites.leaderboard import SORT_SCRIPT, build_leaderboard
from harness.suites.run import run_suite
from harness.suites.scorecard import read_scorecard
from harness.suites.spec import load_suite, resolve_suite
from tests.conftest import wait_for_a_sample, write_rankgpt_folder

runner = CliRunner()

SUITE = """\
suite: tiny
version: 1
metrics: [ndcg@10, kendall_tau, ppi, position_bias_mad]
primary: ndcg@10
aggregate: {{seed: 0, resamples: 500}}
tasks:
  - name: random
    dataset: ./data      # relative: to this file
    depth: 12
    design: {{strategy: random, perms: {perms}}}
  - name: sweep
    dataset: ./data
    design: {{strategy: sweep}}
    metrics: [ndcg@10, position_bias_mad]
  - name: absent
    dataset: no-such-folder/
    bring_your_own: true
"""


def _suite(folder: Path, perms: int = 3, name: str = "tiny.yaml") -> Path:
    if not (folder / "data").is_dir():
        write_rankgpt_folder(folder / "data", queries=4, candidates=12)
    path = folder / name
    path.write_text(SUITE.format(perms=perms), encoding="utf-8")
    return path


SLOW = """\
name: slow
adapter: callable
params: {function: "tests.test_suites:slow_scores", kind: scores}
"""


def slow_scores(query: str, docs: list[str]) -> list[float]:
    """A reranker slow enough (20 ms per order) to be killed mid-suite; order-invariant."""
    import time

    time.sleep(0.02)
    return [float(sum(map(ord, doc)) % 97) for doc in docs]


def _without_timings(card: dict) -> dict:
    """A scorecard without what is measured in time (latencies differ run to run)."""
    card = json.loads(json.dumps(card))
    for task in card["tasks"].values():
        del task["cost"]
        vectors = task["per_query"]["per_query"]
        for name in [n for n in vectors if "latency" in n]:
            del vectors[name]
    return card


def _comparable(board) -> tuple:
    """A leaderboard without its cost columns: what two computations must agree on."""
    rows = [
        (row.label, {k: (c.value, c.ci) for k, c in row.cells.items() if not k.startswith("cost")})
        for row in board.rows
    ]
    return board.suite, board.primary, rows, board.neighbours


def test_bundled_suites_load_and_hash_their_content_not_their_text(tmp_path):
    smoke = resolve_suite("order-smoke")
    assert [t.dataset for t in smoke.tasks] == ["movielens-100k", "msmarco-dl19"]
    full = resolve_suite("order-full")
    assert {t.name for t in full.tasks if t.bring_your_own} == {"scifact-random", "games6k-random"}
    text = Path(smoke.path).read_text()
    reordered = tmp_path / "same.yaml"
    reordered.write_text(
        "# a comment\n" + text.replace("primary: ndcg@10\n", "") + "primary: ndcg@10\n"
    )
    assert load_suite(reordered).sha256 == smoke.sha256
    changed = tmp_path / "changed.yaml"
    changed.write_text(text.replace("perms: 5", "perms: 6", 1))
    assert load_suite(changed).sha256 != smoke.sha256


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("version: 1", "version: zero"), "'version' must be an integer >= 1"),
        (("metrics: [ndcg@10,", "metrics: [nope,"), "unknown metric 'nope'"),
        (("perms: {perms}", "perms: {perms}, pins: 2"), "design: unknown field(s) ['pins']"),
        (("strategy: sweep", "strategy: shuffle"), "unknown --strategy 'shuffle'"),
        (("name: sweep", "name: random"), "task names must be unique"),
        (
            ("primary: ndcg@10", "primary: position_bias_mad"),
            "must be a metric averaged over queries",
        ),
    ],
)
def test_a_bad_suite_file_is_one_line_naming_the_file_and_field(tmp_path, edit, message):
    path = tmp_path / "bad.yaml"
    path.write_text(SUITE.replace(*edit).format(perms=3))
    with pytest.raises(HarnessError, match=re.escape(message)) as caught:
        load_suite(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_suite_run_reuses_finished_runs_and_writes_the_same_scorecards(tmp_path):
    suite = load_suite(_suite(tmp_path))
    out = tmp_path / "out"
    first = run_suite(suite, ["first-stage", "identity"], out)
    assert first.runs == 4 and first.reused == 0
    assert any("'absent' skipped" in note for note in first.notes)
    cards = {label: path.read_bytes() for label, path in first.scorecards.items()}
    again = run_suite(suite, ["first-stage", "identity"], out)
    assert again.reused == 4
    assert {label: p.read_bytes() for label, p in again.scorecards.items()} == cards
    card = json.loads(cards["identity"])
    assert card["suite"] == suite.record() and card["missing"].keys() == {"absent"}
    assert set(card["tasks"]) == {"random", "sweep"}
    assert set(card["tasks"]["sweep"]["metrics"]) == {"ndcg@10", "position_bias_mad"}
    # overall = mean of the task means (each task weighs the same)
    tasks = card["tasks"]
    expected = (tasks["random"]["metrics"]["ndcg@10"]["value"]
                + tasks["sweep"]["metrics"]["ndcg@10"]["value"]) / 2  # fmt: skip
    assert card["overall"]["ndcg@10"]["value"] == pytest.approx(expected, abs=1e-12)
    low, high = card["overall"]["ndcg@10"]["ci95"]
    assert low <= expected <= high
    # the run folders are ordinary ones, each self-contained
    from harness.results.store import read_results

    run = read_results(out / "runs" / "identity" / "random")
    assert run.header.config_hash == tasks["random"]["config_hash"]


def test_killed_suite_resumes_and_merges_like_separate_processes(tmp_path):
    """kill -9 mid-suite, rerun: the same scorecards as separate processes (one reranker each)
    wrote, and their merged leaderboard is the combined run's (costs aside)."""
    from tests.conftest import REPO_ROOT

    path = _suite(tmp_path)
    slow = tmp_path / "slow.yaml"
    slow.write_text(SLOW)
    base = [sys.executable, "-m", "harness", "suite", "run", str(path)]
    both = ["--reranker", str(slow), "--reranker", "identity"]
    killed = tmp_path / "killed"

    def run(*args: str) -> subprocess.Popen:
        return subprocess.Popen([*base, *args], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip

    process = run(*both, "--out", str(killed))
    samples = killed / "runs" / "slow" / "random" / "samples.jsonl"
    wait_for_a_sample(process, samples, seconds=120, poll=0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert not (killed / "scorecards").exists()  # interrupted before the suite finished
    assert 1 <= samples.read_text().count("\n") < 4 * 3
    resume, alone = run(*both, "--out", str(killed)), run("--reranker", str(slow), "--out",
                                                            str(tmp_path / "a"))  # fmt: skip
    # the other reranker's card in this process: a third process
    other = run_suite(load_suite(path), ["identity"], tmp_path / "b").scorecards["identity"]
    for process in (resume, alone):
        assert process.wait(timeout=300) == 0, process.stderr.read()
    resumed = {n: killed / "scorecards" / f"{n}.json" for n in ("slow", "identity")}
    separate = {"slow": tmp_path / "a" / "scorecards" / "slow.json", "identity": other}
    for name in resumed:
        got = _without_timings(json.loads(resumed[name].read_text()))
        assert got == _without_timings(json.loads(separate[name].read_text()))
    merged = build_leaderboard([read_scorecard(p) for p in separate.values()])
    combined = build_leaderboard([read_scorecard(p) for p in resumed.values()])
    assert _comparable(merged) == _comparable(combined)
    assert len(merged.rows) == 2 and merged.neighbours[0] is not None
    # the neighbour difference is the macro difference of the primary metric (all defined)
    top, second = (row.cells["overall:ndcg@10"].value for row in merged.rows)
    assert merged.neighbours[0].diff == pytest.approx(top - second, abs=1e-12)
    # the CLI writes the three files from the cards of separate machines
    result = runner.invoke(app, ["suite", "leaderboard", *map(str, separate.values()),
                                 "--out", str(tmp_path / "board")])  # fmt: skip
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "board" / "leaderboard.md").read_text()
    assert all(f" | {row.label} |" in markdown for row in merged.rows)
    assert "\\begin{tabular}" in (tmp_path / "board" / "leaderboard.tex").read_text()

    # gate: a card passes against itself; identity (order-sensitive) fails against slow
    ok = runner.invoke(app, ["suite", "gate", str(resumed["identity"]), "--baseline",
                             str(separate["identity"])])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert "suite: PASS** (2 of 2 tasks pass)" in ok.output
    worse = runner.invoke(app, ["suite", "gate", str(resumed["identity"]), "--baseline",
                                str(separate["slow"])])  # fmt: skip
    assert worse.exit_code == 1, worse.output
    assert "[random]" in worse.output and "suite: FAIL**" in worse.output


def test_scorecards_of_another_suite_are_refused_in_one_line(tmp_path):
    one = run_suite(load_suite(_suite(tmp_path)), ["first-stage"], tmp_path / "one")
    other = run_suite(load_suite(_suite(tmp_path, perms=2, name="other.yaml")), ["identity"],
                      tmp_path / "two")  # fmt: skip
    cards = [str(one.scorecards["first-stage"]), str(other.scorecards["identity"])]
    result = runner.invoke(app, ["suite", "leaderboard", *cards, "--out", str(tmp_path / "b")])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and "scorecards merge only when their suite hash matches" in line
    gate = runner.invoke(app, ["suite", "gate", cards[1], "--baseline", cards[0]])
    assert gate.exit_code == 2 and "suite hash matches" in gate.output


BROWSER = next(
    (p for p in (Path("/usr/bin/chromium"), Path("/usr/bin/chromium-browser")) if p.exists()), None
)
# Clicks the 'reranker' header twice and records the row order each time.
CHECKER = """
window.addEventListener("load", () => {
  const names = () => [...document.querySelectorAll("#leaderboard tbody tr")]
    .map((tr) => tr.children[1].textContent);
  const before = names();
  const header = [...document.querySelectorAll("#leaderboard th")]
    .find((th) => th.textContent === "reranker");
  header.click(); const first = names();
  header.click(); const second = names();
  const out = document.createElement("pre"); out.id = "check";
  out.textContent = JSON.stringify({before, first, second,
    resources: performance.getEntriesByType("resource").map((r) => r.name)});
  document.body.appendChild(out);
});
""".strip()


@pytest.mark.skipif(BROWSER is None, reason="headless Chromium not installed")
def test_leaderboard_sorts_in_a_real_browser_and_fetches_nothing(tmp_path):
    from harness.suites.leaderboard import CSP, write_leaderboard
    from tests.test_report_browser import _chromium

    suite = load_suite(_suite(tmp_path))
    result = run_suite(suite, ["identity", "first-stage"], tmp_path / "out")
    files = write_leaderboard(list(result.scorecards.values()), tmp_path / "board")
    html = files.html.read_text()
    assert SORT_SCRIPT in html and "http" not in html.split("<body>")[1]
    digest = base64.b64encode(hashlib.sha256(CHECKER.encode()).digest()).decode()
    page = tmp_path / "checked.html"
    page.write_text(
        html.replace(CSP, f"{CSP} 'sha256-{digest}'").replace(
            "</body>", f"<script>{CHECKER}</script></body>"
        )
    )
    done = _chromium(["--virtual-time-budget=5000", "--dump-dom", page.as_uri()], tmp_path / "p")
    match = re.search(r'<pre id="check">(.*?)</pre>', done.stdout, re.S)
    assert match, done.stderr[-2000:]
    found = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    names = sorted(found["before"])
    assert found["first"] == names[::-1] and found["second"] == names
    assert found["resources"] == []


def test_a_suite_refuses_before_any_work_absent_data_it_does_not_mark_and_a_doubled_reranker(
    tmp_path,
):
    path = _suite(tmp_path)
    path.write_text(path.read_text().replace("    bring_your_own: true\n", ""))
    result = runner.invoke(app, ["suite", "run", str(path), "--reranker", "identity",
                                 "--out", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "task 'absent': missing: dataset path not found" in result.output
    assert not (tmp_path / "out").exists()
    path = _suite(tmp_path, name="ok.yaml")
    twice = ["--reranker", "identity", "--reranker", "identity"]
    result = runner.invoke(app, ["suite", "run", str(path), *twice, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "given twice" in result.output
