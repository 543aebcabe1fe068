"""The Python API: run a configuration from a notebook and get its results as DataFrames.

``harness.evaluate`` runs what ``harness run`` runs (same folder, same resume, same
``results.json``) and returns an :class:`Evaluation`; ``harness.dry_run`` counts what it would
cost, as ``harness run --dry-run`` does; ``harness.load`` reads a finished run folder into one.
A reranker is a preset name or YAML path, or your own function wrapped by
:func:`harness.from_scores` / :func:`harness.from_order` (a bare function is taken as a
scoring function), which the run then records as the reranker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.options import takes_options

if TYPE_CHECKING:
    import pandas as pd

    from harness.executors import ExecutorOptions
    from harness.metrics.registry import MetricSpec
    from harness.rerankers.methods.callable import FunctionReranker
    from harness.results.schema import RunResults
    from harness.runner import DryRun, PreparedRun, ProgressFn


@dataclass(frozen=True)
class Evaluation:
    """A finished run: its folder, its typed results, and DataFrame views of them."""

    run_dir: Path
    results: RunResults

    @property
    def reranker(self) -> str:
        return self.results.reranker.name

    @property
    def relevance_level(self) -> int:
        """The grade from which the binary metrics (``mrr@10``) counted a candidate relevant."""
        return self.results.relevance_level

    @property
    def summary(self) -> pd.DataFrame:
        """One row per summary metric: value, 95% interval, queries, direction, meaning, the
        relevance level of a binary metric (``rel_level``, else None) and, where the design
        leaves it undefined, why (``undefined``, else None)."""
        import pandas as pd

        specs = {spec.name: spec for spec in self.results.metrics.specs}
        rows = []
        for name, entry in self.results.summary.items():
            spec = specs.get(name)
            low, high = entry.ci95 if entry.ci95 is not None else (float("nan"),) * 2
            rows.append(
                {
                    "metric": name,
                    "value": entry.value,
                    "ci_low": low,
                    "ci_high": high,
                    "n": entry.n,
                    "aggregate": entry.aggregate,
                    "direction": None if spec is None else spec.direction,
                    "shows": "" if spec is None else spec.shows,
                    "rel_level": self.results.relevance_level if spec and spec.binary else None,
                    "undefined": self.results.undefined_text(name),
                }
            )
        return pd.DataFrame(rows).set_index("metric")

    @property
    def per_query(self) -> pd.DataFrame:
        """One row per query (index ``query_id``), one column per per-query metric."""
        import pandas as pd

        frame = pd.DataFrame.from_dict(dict(self.results.per_query), orient="index")
        frame.index.name = "query_id"
        return frame

    @property
    def samples(self) -> pd.DataFrame:
        """One row per reranked (query, order): the order shown and the ranking returned (as
        doc-id tuples), the order's label, its nDCG@10/MRR@10 and its call facts."""
        import pandas as pd

        from harness.results.store import iter_samples, read_queries

        queries = read_queries(self.run_dir)
        per_order = {
            q: dict(zip(v.order_index, zip(*v.values.values(), strict=True), strict=True))
            for q, v in self.results.per_order.items()
        }
        names = {q: tuple(v.values) for q, v in self.results.per_order.items()}
        rows = []
        for sample in iter_samples(self.run_dir):
            doc_ids = queries[sample.query_id].doc_ids
            row: dict[str, Any] = {
                "query_id": sample.query_id,
                "order_index": sample.order_index,
                "label": str(sample.label),
                "shown": tuple(doc_ids[i] for i in sample.shown),
                "ranking": sample.ranking,
            }
            values = per_order.get(sample.query_id, {}).get(sample.order_index)
            if values is not None:
                row |= dict(zip(names[sample.query_id], values, strict=True))
            row |= {k: v for k, v in sample.facts.items() if k != "extra"}
            rows.append(row)
        frame = pd.DataFrame(rows)
        if rows:
            frame = frame.sort_values(["query_id", "order_index"], kind="stable")
        return frame.reset_index(drop=True)


@takes_options
def evaluate(
    reranker: str | FunctionReranker | Callable[[str, list[str]], Any] | None = None,
    *,
    metrics: str | Sequence[MetricSpec] | None = None,
    progress: Callable[[int, int], None] | bool | None = None,
    **options: Any,
) -> Evaluation:
    """Run one configuration (resuming ``out`` if it holds part of it) and return it.

    ``options`` are the ``harness run`` flags, same names (``batch_size`` for
    ``--batch-size``), same defaults, same meaning, declared once in
    :data:`harness.options.RUN_OPTIONS` (``help(harness.evaluate)`` lists them); an unknown
    one raises :class:`~harness.options.UnknownOption` (a TypeError) naming it.
    ``metrics``: metrics to compute beside the built-ins, :class:`MetricSpec` entries with
    kernels or a module path (``--metrics-module``; docs/metrics.md).
    ``config`` is a ``run.yaml`` the other options override; ``queries`` also takes a list
    of query ids; ``log_prompts`` writes ``prompts.jsonl`` (empty for a function, which calls
    no model the harness sees); ``executor="ray"`` runs a preset on Ray actors (a function
    runs here, in this process).
    ``reranker`` is a preset name or YAML path, a
    :class:`~harness.rerankers.methods.callable.FunctionReranker`, or a bare scoring function
    ``fn(query, docs) -> scores`` (None: the ``config`` file's). ``progress``:
    ``fn(done, total)`` called after each batch, or True for the CLI's progress lines on
    stderr (for notebooks and logs).
    """
    from harness.errors import HarnessError
    from harness.runner import execute_run

    prepared, function, executor = _prepare(reranker, "evaluate", options, metrics)
    report = _progress_fn(progress, prepared)
    log_prompts = executor.log_prompts
    if function is None:
        results = execute_run(
            prepared, progress=report, log_prompts=log_prompts, executor=executor.options
        )
    else:
        if executor.options.kind != "local":
            raise HarnessError(
                f"executor={executor.options.kind!r} runs presets; a function runs locally"
            )
        results = execute_run(
            prepared, progress=report, reranker_factory=function.build, log_prompts=log_prompts
        )
    return Evaluation(prepared.run_dir, results)


@takes_options
def dry_run(
    reranker: str | FunctionReranker | Callable[[str, list[str]], Any] | None = None,
    *,
    metrics: str | Sequence[MetricSpec] | None = None,
    **options: Any,
) -> DryRun:
    """What :func:`evaluate` with the same keywords would cost, as ``harness run --dry-run``
    prints it (:class:`~harness.runner.DryRun`): pending orders, forward passes, prompt and
    generated tokens, and a remote backend's requests or a local model's time estimate from a
    short measured probe. Writes nothing; the execution options (``executor``, ``workers``,
    ``log_prompts``, ...) are taken and change nothing, as with ``--dry-run``."""
    from harness.runner import dry_run as count_run

    prepared, function, _ = _prepare(reranker, "dry_run", options, metrics)
    if function is None:
        return count_run(prepared)
    return count_run(prepared, reranker_factory=function.build)


@dataclass(frozen=True)
class _Execution:
    """The execution options of a call: how it runs, never what it computes."""

    options: ExecutorOptions
    log_prompts: bool


def _prepare(
    reranker: Any,
    function_name: str,
    given: dict[str, Any],
    metrics: str | Sequence[MetricSpec] | None = None,
) -> tuple[PreparedRun, FunctionReranker | None, _Execution]:
    """The prepared run of :func:`evaluate`'s or :func:`dry_run`'s options, the function
    reranker when ``reranker`` is one, and how to execute it. ``metrics``: a module path
    (as ``metrics_module``) or :class:`MetricSpec` entries, added to the built-ins."""
    from harness.options import check_keywords, config_flags

    flags = check_keywords(function_name, given)  # before any work, as the CLI's parser
    from harness.backends.threads import apply_wait_policy

    apply_wait_policy()  # as the CLI does; it takes effect where torch is not loaded yet
    from harness.config import merge_config
    from harness.errors import HarnessError
    from harness.executors import executor_options
    from harness.rerankers.methods.callable import FunctionReranker, from_scores
    from harness.runner import prepare_run

    execution = _Execution(executor_options(flags), log_prompts=flags["log_prompts"])
    function: FunctionReranker | None = None
    if isinstance(reranker, FunctionReranker):
        function = reranker
    elif callable(reranker):
        function = from_scores(reranker)
    name = function.name if function is not None else reranker
    if isinstance(metrics, str):  # a module path: one more --metrics-module
        modules = [m for m in (flags["metrics_module"], metrics) if m]
        flags = flags | {"metrics_module": ",".join(modules)}
    settings = config_flags(flags | {"reranker": None if name is None else str(name)})
    config = flags["config"]
    resolved = merge_config(None if config is None else Path(config), settings)
    if function is None:
        prepared = prepare_run(resolved)
    elif resolved.model is not None:
        raise HarnessError("model= applies to presets; a function loads its own model")
    else:
        prepared = prepare_run(resolved, preset=function.preset())
    if metrics is not None and not isinstance(metrics, str):  # specs: added as they are
        prepared = replace(prepared, metrics=prepared.metrics.with_metrics(*metrics))
    return prepared, function, execution


def _progress_fn(
    progress: Callable[[int, int], None] | bool | None, prepared: PreparedRun
) -> ProgressFn | None:
    """The runner's progress callback for :func:`evaluate`'s ``progress``."""
    if progress is None or progress is False:
        return None
    if progress is True:
        from harness.progress import ProgressLines

        return ProgressLines(f"{prepared.preset.name} on {prepared.card.name}")
    user = progress

    def report(done: int, total: int, queries: tuple[int, int] | None = None) -> None:
        user(done, total)

    return report


def load(run_dir: str | Path) -> Evaluation:
    """A finished run folder (from the CLI or :func:`evaluate`) as an :class:`Evaluation`."""
    from harness.results.store import read_results

    path = Path(run_dir)
    return Evaluation(path, read_results(path))
