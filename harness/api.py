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

if TYPE_CHECKING:
    import pandas as pd

    from harness.metrics.registry import MetricSpec
    from harness.rerankers.callable import FunctionReranker
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


def evaluate(
    reranker: str | FunctionReranker | Callable[[str, list[str]], Any],
    *,
    dataset: str | None = None,
    strategy: str | None = None,
    perms: int | None = None,
    queries: int | str | list[str] | None = None,
    depth: int | None = None,
    seed: int | None = None,
    model: str | None = None,
    out: str | Path | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    count: int | None = None,
    pin: str | None = None,
    repeats: int | None = None,
    relevance_level: int | None = None,
    max_invalid_share: float | None = None,
    target: str | None = None,
    min_perms: int | None = None,
    metrics: str | Sequence[MetricSpec] | None = None,
    log_prompts: bool = False,
    executor: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    progress: Callable[[int, int], None] | bool | None = None,
) -> Evaluation:
    """Run one configuration (resuming ``out`` if it holds part of it) and return it.

    Every keyword is the ``harness run`` flag of the same name and defaults as it does
    (``relevance_level``: the grade from which MRR counts a candidate as relevant, by default
    the dataset card's; ``target``/``min_perms``: adaptive sampling, docs/adaptive.md);
    ``metrics``: metrics to compute beside the built-ins, as :class:`MetricSpec` entries
    with kernels or a module path (``--metrics-module``; docs/metrics.md);
    ``queries`` also takes a list of query ids; ``log_prompts`` writes ``prompts.jsonl``
    (empty for a function, which calls no model the harness sees); ``executor="ray"`` runs a
    preset on Ray actors (a function runs here, in this process).
    ``reranker`` is a preset name or YAML path, a
    :class:`~harness.rerankers.callable.FunctionReranker`, or a bare scoring function
    ``fn(query, docs) -> scores``. ``progress``: ``fn(done, total)`` called after each batch,
    or True for the CLI's progress lines on stderr (for notebooks and logs).
    """
    from harness.errors import HarnessError
    from harness.executors import ExecutorOptions
    from harness.runner import execute_run

    options = ExecutorOptions(kind=executor, workers=workers, address=ray_address)
    prepared, function = _prepare(reranker, locals())
    report = _progress_fn(progress, prepared)
    if function is None:
        results = execute_run(prepared, progress=report, log_prompts=log_prompts, executor=options)
    else:
        if options.kind != "local":
            raise HarnessError(f"executor={executor!r} runs presets; a function runs locally")
        results = execute_run(
            prepared, progress=report, reranker_factory=function.build, log_prompts=log_prompts
        )
    return Evaluation(prepared.run_dir, results)


def dry_run(
    reranker: str | FunctionReranker | Callable[[str, list[str]], Any],
    *,
    dataset: str | None = None,
    strategy: str | None = None,
    perms: int | None = None,
    queries: int | str | list[str] | None = None,
    depth: int | None = None,
    seed: int | None = None,
    model: str | None = None,
    out: str | Path | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    count: int | None = None,
    pin: str | None = None,
    repeats: int | None = None,
    relevance_level: int | None = None,
    max_invalid_share: float | None = None,
    target: str | None = None,
    min_perms: int | None = None,
    metrics: str | Sequence[MetricSpec] | None = None,
) -> DryRun:
    """What :func:`evaluate` with the same keywords would cost, as ``harness run --dry-run``
    prints it (:class:`~harness.runner.DryRun`): pending orders, forward passes, prompt and
    generated tokens, and a remote backend's requests or a local model's time estimate from a
    short measured probe. Writes nothing."""
    from harness.runner import dry_run as count_run

    prepared, function = _prepare(reranker, locals())
    if function is None:
        return count_run(prepared)
    return count_run(prepared, reranker_factory=function.build)


def _prepare(reranker: Any, flags: dict[str, Any]) -> tuple[PreparedRun, FunctionReranker | None]:
    """The prepared run of :func:`evaluate`'s or :func:`dry_run`'s keywords, and the function
    reranker when ``reranker`` is one."""
    from harness.backends.threads import apply_wait_policy

    apply_wait_policy()  # as the CLI does; it takes effect where torch is not loaded yet
    from harness.config import merge_config
    from harness.errors import HarnessError
    from harness.rerankers.callable import FunctionReranker, from_scores
    from harness.runner import prepare_run

    function: FunctionReranker | None = None
    if isinstance(reranker, FunctionReranker):
        function = reranker
    elif callable(reranker):
        function = from_scores(reranker)
    queries = flags["queries"]
    if isinstance(queries, list | tuple):
        queries = ",".join(str(q) for q in queries)
    out = flags["out"]
    metrics = flags["metrics"]
    settings = merge_config(
        None,
        {
            **{key: flags[key] for key in SETTINGS},
            "reranker": function.name if function is not None else str(reranker),
            "queries": queries,
            "out": None if out is None else str(out),
            "metrics_module": metrics if isinstance(metrics, str) else None,
        },
    )
    if function is None:
        prepared = prepare_run(settings)
    elif flags["model"] is not None:
        raise HarnessError("model= applies to presets; a function loads its own model")
    else:
        prepared = prepare_run(settings, preset=function.preset())
    if metrics is not None and not isinstance(metrics, str):  # specs: added as they are
        prepared = replace(prepared, metrics=prepared.metrics.with_metrics(*metrics))
    return prepared, function


# evaluate's keywords that are run settings as they are
SETTINGS = (
    "dataset", "strategy", "perms", "depth", "seed", "model", "device", "batch_size", "count",
    "pin", "repeats", "relevance_level", "max_invalid_share", "target", "min_perms",
)  # fmt: skip


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
