"""Run a suite: every task x reranker as an ordinary run folder, then one scorecard per reranker.

Layout of ``--out DIR``::

    DIR/runs/<reranker>/<task>/     ordinary run folders (resumable, each self-contained)
    DIR/scorecards/<reranker>.json  one per reranker
    DIR/leaderboard.{html,md,tex}   across the scorecards of this invocation

A run folder that already holds finished results of the same configuration is reused as it
is; an unfinished one resumes where it stopped (kill -9 included), so rerunning the same
command finishes a suite and writes the same scorecards.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.executors import ExecutorOptions
from harness.results.schema import RunResults
from harness.suites.spec import Suite, SuiteTask

# progress(done, total, what): orders reranked over the whole suite, and the run under way
SuiteProgress = Callable[[int, int, str], None]
LOCAL = ExecutorOptions()


@dataclass(frozen=True)
class SuiteRun:
    """What a suite run wrote: scorecard per reranker label, and notes (skipped tasks)."""

    scorecards: dict[str, Path]
    notes: tuple[str, ...]
    reused: int  # run folders whose finished results were taken as they were
    runs: int


def reranker_label(reranker: str) -> str:
    """A reranker argument (preset name or file) as folder and scorecard name."""
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", Path(reranker).stem) or "reranker"


def run_suite(
    suite: Suite,
    rerankers: Sequence[str],
    out: Path,
    *,
    device: str = "cpu",
    batch_size: int | None = None,
    executor: ExecutorOptions = LOCAL,
    progress: SuiteProgress | None = None,
    note: Callable[[str], None] | None = None,
) -> SuiteRun:
    """Run every available task for every reranker (task after task per reranker), write
    each reranker's scorecard. Tasks whose data a user must bring and is absent are skipped
    and said; an absent dataset the suite does not mark so is an error before any work."""
    from harness.runner import execute_run, prepare_run
    from harness.suites.scorecard import build_scorecard, write_scorecard

    labels = [reranker_label(r) for r in rerankers]
    if len(set(labels)) != len(labels):
        raise HarnessError(f"--reranker given twice (as {labels}); give each reranker once")
    if not rerankers:
        raise HarnessError("no reranker given: pass --reranker NAME (repeatable)")
    notes: list[str] = []
    missing: dict[str, str] = {}
    tasks: list[SuiteTask] = []
    for task in suite.tasks:
        status = task.data_status()
        if status == "available":
            tasks.append(task)
        elif task.bring_your_own:
            missing[task.name] = f"data not here ({status.removeprefix('missing: ')})"
            notes.append(f"task {task.name!r} skipped: its data is yours to bring ({status})")
        else:
            raise HarnessError(f"suite {suite.name!r}, task {task.name!r}: {status}")
    if not tasks:
        raise HarnessError(f"suite {suite.name!r}: no task has its data on this machine")
    for line in notes:
        if note:
            note(line)
    # Everything is resolved before any model loads: a bad preset stops the suite at once.
    prepared = {
        (label, task.name): prepare_run(task.run_config(reranker, _run_dir(out, label, task),
                                                        device=device, batch_size=batch_size))
        for reranker, label in zip(rerankers, labels, strict=True)
        for task in tasks
    }  # fmt: skip
    total = sum(p.total_orders for p in prepared.values())
    done = 0
    finished: dict[str, dict[str, RunResults]] = {label: {} for label in labels}
    reused = 0
    for (label, name), run in prepared.items():
        what = f"{label} on {name}"
        results = _finished(run)
        if results is not None:
            reused += 1
        else:
            offset = done

            def step(
                done: int,
                total: int,  # the run's; the suite's progress counts over every run
                queries: tuple[int, int] | None = None,
                offset: int = offset,
                suite_total: int = total,
                what: str = what,
            ) -> None:
                if progress:
                    progress(offset + done, suite_total, what)

            results = execute_run(run, progress=step, executor=executor)
        done += run.total_orders
        if progress:
            progress(done, total, what)
        finished[label][name] = results
    written = {}
    for label in labels:
        card = build_scorecard(
            suite,
            label,
            finished[label],
            {t.name: f"runs/{label}/{t.name}" for t in tasks},
            missing,
        )
        path = out / "scorecards" / f"{label}.json"
        write_scorecard(path, card)
        written[label] = path
    return SuiteRun(written, tuple(notes), reused, len(prepared))


def _run_dir(out: Path, label: str, task: SuiteTask) -> Path:
    return out / "runs" / label / task.name


def _finished(prepared) -> RunResults | None:
    """The run's results when its folder already holds them for this configuration, complete."""
    from harness.results.store import RESULTS_FILE, read_results

    if not (prepared.run_dir / RESULTS_FILE).is_file():
        return None
    try:
        results = read_results(prepared.run_dir)
    except HarnessError:
        return None  # an older format or a damaged file: the run decides (resume or refuse)
    complete = _all_shown(results, prepared)
    if results.header.config_hash != prepared.header.config_hash or not complete:
        return None
    return results


def _all_shown(results: RunResults, prepared) -> bool:
    """Whether the run showed every order it will show: all of them, or, for an adaptive run
    (which stops each query when its target is met), once its rounds have finished."""
    if prepared.config.target is None:
        return results.counts.get("samples") == prepared.total_orders
    from harness.adaptive_run import ADAPTIVE_FILE

    record = prepared.run_dir / ADAPTIVE_FILE
    try:
        return bool(json.loads(record.read_text()).get("finished"))
    except (OSError, ValueError):
        return False
