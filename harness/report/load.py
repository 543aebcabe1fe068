"""Read finished run folders into typed records for reports, gates, baselines and exports.

A run folder is self-contained (see :mod:`harness.results.schema`): ``results.json`` holds
the numbers, per query and per order; ``queries.jsonl`` the doc ids, judgments and text of
each query; ``samples.jsonl`` the raw outputs. Nothing here reloads the dataset, so a run can
be reported on a machine that never had its data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.results.schema import QueryRecord, RunResults
from harness.results.store import (
    RESULTS_FILE,
    SAMPLES_FILE,
    Sample,
    iter_samples,
    read_queries,
    read_results,
)


@dataclass(frozen=True)
class RunData:
    """One finished run: a display label, its results and query records; its samples stay
    on disk and are streamed each time :attr:`samples` is iterated."""

    label: str
    path: Path
    results: RunResults
    queries: Mapping[str, QueryRecord]

    @property
    def samples(self) -> Iterator[Sample]:
        """The run's samples, read from ``samples.jsonl`` as they are consumed."""
        return iter_samples(self.path)

    @property
    def reranker(self) -> str:
        return self.results.reranker.name

    @property
    def strategy(self) -> str:
        return self.results.permutations.strategy

    @property
    def query_ids(self) -> tuple[str, ...]:
        return self.results.query_ids

    def per_query(self, metric: str) -> dict[str, float]:
        """``{query id: value}`` of a per-query metric (NaN where absent)."""
        return self.results.vector(metric)

    def summary_value(self, metric: str) -> float:
        return self.results.summary_value(metric)


def load_run(run_dir: Path, *, label: str | None = None) -> RunData:
    """Results and query records of one finished run (samples are streamed when used)."""
    results = read_results(run_dir)
    if not (run_dir / SAMPLES_FILE).is_file():
        raise HarnessError(f"{run_dir} has {RESULTS_FILE} but no {SAMPLES_FILE}")
    return RunData(
        label=label or results.reranker.name,
        path=run_dir,
        results=results,
        queries=read_queries(run_dir),
    )


def load_runs(run_dirs: Sequence[Path]) -> list[RunData]:
    """Several runs with unique labels: the reranker name, plus the folder name when shared."""
    if not run_dirs:
        raise HarnessError("give at least one run folder")
    results = [read_results(d) for d in run_dirs]  # fail fast, before reading any samples
    names = [r.reranker.name for r in results]
    repeated = {n for n, c in Counter(names).items() if c > 1}
    labels = [
        f"{n} ({d.name})" if n in repeated else n for n, d in zip(names, run_dirs, strict=True)
    ]
    if len(set(labels)) < len(labels):
        labels = [f"{label} #{i + 1}" for i, label in enumerate(labels)]
    return [load_run(d, label=label) for d, label in zip(run_dirs, labels, strict=True)]
