"""A reranker's scorecard on a suite: one JSON file that is the whole submission.

It names the suite (name, version, content hash) and the reranker (preset and the identity its
runs recorded: model and prompt hashes), and per task the values of the suite's metrics with
intervals, the costs, and the per-query vectors of every gateable metric (a run baseline, see
:mod:`harness.gates.baseline`), so leaderboards can test neighbours paired and ``harness suite
gate`` can gate task by task without the run folders. Nothing in it depends on where or when it
was computed beyond the measured latencies, so a resumed suite writes the same card.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.files import (
    dumps_json,
    ensure_writable_folder,
    read_json_object,
    write_text_atomic,
)
from harness.gates.baseline import Baseline, baseline_from_results
from harness.metrics import registry
from harness.metrics.bootstrap import bootstrap_macro_mean_ci, bootstrap_mean_ci
from harness.results.schema import RunResults, json_ready
from harness.suites.spec import Suite

FORMAT = 1
MEAN = "mean over queries"  # metrics with per-query means get intervals; pooled ones not
COSTS = (registry.LATENCY_PER_SET_MS, registry.FORWARD_PASSES, registry.latency_percentile(50))


@dataclass(frozen=True)
class Scorecard:
    """A scorecard as read back: its JSON, with typed per-task baselines."""

    data: Mapping[str, Any]
    origin: str

    @property
    def suite(self) -> Mapping[str, Any]:
        return self.data["suite"]

    @property
    def label(self) -> str:
        return str(self.data["reranker"]["label"])

    @property
    def tasks(self) -> Mapping[str, Any]:
        return self.data["tasks"]

    def baseline(self, task: str) -> Baseline:
        return Baseline.from_dict(self.tasks[task]["per_query"], where=f"{self.origin}: {task}")

    def value(self, task: str | None, metric: str) -> float:
        """A task's value of ``metric`` (``task`` None: the overall one); NaN when absent."""
        section = self.data["overall"] if task is None else self.tasks.get(task, {}).get("metrics")
        entry = (section or {}).get(metric) or {}
        value = entry.get("value")
        return math.nan if value is None else float(value)

    def interval(self, task: str | None, metric: str) -> tuple[float, float] | None:
        section = self.data["overall"] if task is None else self.tasks.get(task, {}).get("metrics")
        ci = ((section or {}).get(metric) or {}).get("ci95")
        if not ci or ci[0] is None:
            return None
        return float(ci[0]), float(ci[1])


def build_scorecard(
    suite: Suite,
    label: str,
    results: Mapping[str, RunResults],
    run_dirs: Mapping[str, str],
    missing: Mapping[str, str],
) -> dict[str, Any]:
    """The scorecard of one reranker from its finished task runs (``results`` by task name);
    ``missing``: tasks not run here and why (data a user must bring)."""
    if not results:
        raise HarnessError(f"no task of suite {suite.name!r} ran, so there is nothing to score")
    first = next(iter(results.values()))
    aggregate = suite.aggregate
    tasks: dict[str, Any] = {}
    vectors: dict[str, dict[str, np.ndarray]] = {}
    for task in suite.tasks:
        if task.name not in results:
            continue
        run = results[task.name]
        baseline = baseline_from_results(run, run_dirs[task.name])
        # where and when it ran is not what it measured: left out, so a resumed or moved
        # suite writes the same card
        source = {"run_dir": run_dirs[task.name], "harness": baseline.source.get("harness")}
        per_query = baseline.to_dict() | {"source": source}
        metrics = {}
        vectors[task.name] = {}
        for metric in task.metrics:
            spec = registry.get(metric)
            entry = run.summary.get(metric)
            if spec.summary == MEAN:
                values = np.asarray(list(run.vector(metric).values()), dtype=np.float64)
                vectors[task.name][metric] = values
                mean, low, high = bootstrap_mean_ci(
                    values,
                    seed=aggregate.seed,
                    n_resamples=aggregate.resamples,
                    confidence=aggregate.confidence,
                )
                metrics[metric] = {
                    "value": mean,
                    "ci95": [low, high],
                    "n": int(np.count_nonzero(~np.isnan(values))),
                }
            else:
                metrics[metric] = {"value": math.nan if entry is None else entry.value}
            why = run.undefined_text(metric)
            if why:
                metrics[metric]["undefined"] = why
        tasks[task.name] = {
            "dataset": {
                "name": run.dataset.name,
                "fingerprint": run.dataset.fingerprint,
                "queries": run.dataset.queries_used,
            },
            "orders": run.counts.get("samples", run.permutations.total_orders),  # adaptive: shown
            "config_hash": run.header.config_hash,
            "metrics": metrics,
            "cost": {m: run.summary_value(m) for m in COSTS},
            "per_query": per_query,
        }
    overall = {}
    for metric in suite.metrics:
        per_task = [vectors[t][metric] for t in vectors if metric in vectors[t]]
        if registry.get(metric).summary == MEAN:
            mean, low, high = bootstrap_macro_mean_ci(
                per_task,
                seed=aggregate.seed,
                n_resamples=aggregate.resamples,
                confidence=aggregate.confidence,
            )
            counted = sum(bool(np.any(~np.isnan(v))) for v in per_task)
            overall[metric] = {"value": mean, "ci95": [low, high], "tasks": counted}
        else:  # pooled within a task: the mean of the defined task values, no interval
            defined = [
                tasks[t]["metrics"][metric]["value"]
                for t in tasks
                if metric in tasks[t]["metrics"]
                and not math.isnan(tasks[t]["metrics"][metric]["value"])
            ]
            mean = float(np.mean(defined)) if defined else math.nan
            overall[metric] = {"value": mean, "tasks": len(defined)}
    reranker = first.reranker
    return json_ready(
        {
            "harness_scorecard": FORMAT,
            "suite": suite.record(),
            "primary": suite.primary,
            "reranker": {
                "label": label,
                "name": reranker.name,
                "adapter": reranker.adapter,
                "order_invariant": reranker.order_invariant,
                "params": dict(reranker.params),
                "identity": dict(reranker.identity),
            },
            "aggregate": {
                "task": "mean over the task's queries, percentile bootstrap",
                "overall": "mean of task means (tasks weigh the same), stratified bootstrap",
                **vars(aggregate),
            },
            "tasks": tasks,
            "missing": dict(missing),
            "overall": overall,
        }
    )


def write_scorecard(path: Path, card: Mapping[str, Any]) -> None:
    ensure_writable_folder(path.parent, "the scorecard")
    write_text_atomic(path, dumps_json(card, indent=1, allow_nan=False) + "\n")


def read_scorecard(path: Path) -> Scorecard:
    data = read_json_object(path, "scorecard")
    version = data.get("harness_scorecard")
    if version != FORMAT:
        raise HarnessError(
            f"{path}: not a harness scorecard of format {FORMAT} (found {version!r})"
        )
    for key in ("suite", "reranker", "tasks", "overall"):
        if not isinstance(data.get(key), Mapping):
            raise HarnessError(f"{path}: malformed scorecard (no '{key}' object)")
    return Scorecard(data, str(path))


def check_same_suite(cards: list[Scorecard]) -> None:
    """Scorecards merge only on the same suite content; refused in one line otherwise."""
    first = cards[0]
    for card in cards[1:]:
        if card.suite.get("sha256") != first.suite.get("sha256"):
            raise HarnessError(
                f"{card.origin} is of suite {_suite_label(card)}, {first.origin} of "
                f"{_suite_label(first)}: scorecards merge only when their suite hash matches"
            )
    for card in cards[1:]:
        for task, entry in card.tasks.items():
            other = first.tasks.get(task)
            if other and other["dataset"]["fingerprint"] != entry["dataset"]["fingerprint"]:
                raise HarnessError(
                    f"{card.origin}: task {task!r} ran on other data than in {first.origin} "
                    f"(dataset fingerprint {entry['dataset']['fingerprint']} vs "
                    f"{other['dataset']['fingerprint']}); rerun it on the suite's data"
                )


def _suite_label(card: Scorecard) -> str:
    suite = card.suite
    return f"{suite.get('name')} v{suite.get('version')} ({str(suite.get('sha256'))[:12]})"
