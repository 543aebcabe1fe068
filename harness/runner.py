"""Run one configuration end to end: data → permutations → reranker → samples → results.

:func:`execute_run` is the one entry point (the CLI and the tests both use it): it reranks
what is pending, appending samples as it goes, then computes and writes the results.
"""

from __future__ import annotations

import json
import time
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, overload

from harness.adaptive_run import ADAPTIVE_FILE, adaptive_rounds, in_round, limits_of
from harness.backends.registry import backend_class
from harness.data.compact import set_query_ids
from harness.data.model import CandidateSet
from harness.errors import HarnessError, shorten
from harness.executors import (
    Executor,
    ExecutorOptions,
    FailedUnit,
    RerankerFactory,
    Unit,
)
from harness.executors.local import rerank_unit
from harness.executors.start import start_executor
from harness.permutations import (
    PermutationPlan,
)
from harness.prepare import PreparedRun
from harness.prepare import prepare_run as prepare_run  # where callers have always found it
from harness.rerankers.base import Reranker, RunContext
from harness.rerankers.debiasers.meta import model_reranker, wrap_backends
from harness.rerankers.registry import (
    adapter_class,
    backend_of,
    build_reranker,
    device_used,
    model_preset,
)
from harness.results.lock import run_folder_lock
from harness.results.prompt_log import PromptLog
from harness.results.provenance import environment, utc_now
from harness.results.schema import (
    RunResults,
)
from harness.results.store import (
    FAILURES_FILE,
    IDENTITY_FILE,
    RESULTS_FILE,
    SUMMARY_FILE,
    RunStore,
    Sample,
    SampleIndex,
)
from harness.usage import Usage, total
from harness.validity import INVALID_ANSWER, refusal, too_many_invalid

LOCAL = ExecutorOptions()


class ProgressFn(Protocol):
    """Called after every batch with the orders done and in all (and the queries with every
    order done, of all queries); the CLI draws a bar or prints progress lines with it."""

    def __call__(self, done: int, total: int, queries: tuple[int, int] | None = None) -> None: ...


# stage("computing metrics") wraps a step that shows no progress; the CLI shows a spinner.
StageFn = Callable[[str], AbstractContextManager[Any]]


@dataclass(frozen=True)
class RerankedRun:
    """Where every sample of a run is on disk (resumed ones included) and the reranker that
    produced them."""

    samples: SampleIndex
    reranker_identity: dict[str, Any]
    seconds: float


def execute_run(
    prepared: PreparedRun,
    *,
    progress: ProgressFn | None = None,
    stage: StageFn | None = None,
    reranker_factory: RerankerFactory = build_reranker,
    executor: ExecutorOptions = LOCAL,
    log_prompts: bool = False,
) -> RunResults:
    """Rerank what is pending (where ``executor`` says), then compute and write the results.

    The run folder is locked first, before any model loads or any file in it is written: a
    second writer of the same folder is refused at once
    (:class:`~harness.results.lock.RunFolderBusy`). Ctrl-C (KeyboardInterrupt) propagates
    after the finished batches are saved; rerunning resumes. ``stage`` wraps the metric
    computation (the CLI shows a status line with it). ``log_prompts`` writes every model
    call's prompt and output to ``prompts.jsonl``.
    """
    with run_folder_lock(prepared.run_dir):
        reranked = rerank_pending(
            prepared,
            progress=progress,
            reranker_factory=reranker_factory,
            executor=executor,
            log_prompts=log_prompts,
        )
        with (stage or _no_stage)("computing metrics"):
            return write_results(prepared, reranked, executor)


def _no_stage(_: str) -> AbstractContextManager[None]:
    return nullcontext()


def _sample_checker(prepared: PreparedRun) -> Callable[[Sample], str | None]:
    """What is wrong with a sample on disk for this run: a query or order index the plan does
    not have, or an order shown that is not the plan's (samples of another run or seed)."""
    sets = {query_id: k for k, query_id in enumerate(set_query_ids(prepared.dataset.sets))}
    last: dict[str, tuple[PermutationPlan, set[str]]] = {}  # the query being read (in runs)

    def check(sample: Sample) -> str | None:
        query = shorten(sample.query_id, quote=True)
        key = f"sample ({query}, order {sample.order_index})"
        if sample.query_id not in sets:
            return f"{key}: this run has no query {query}"
        if sample.query_id not in last:
            cset = prepared.dataset.sets[sets[sample.query_id]]
            last.clear()
            last[sample.query_id] = (prepared.plan(cset), set(cset.doc_ids))
        plan, doc_ids = last[sample.query_id]
        if not 0 <= sample.order_index < len(plan):
            return f"{key}: this run has {len(plan)} orders for that query"
        if sample.shown != tuple(int(i) for i in plan.orders[sample.order_index]):
            return (
                f"{key} shows another order than this run's plan: it belongs to another run "
                "(seed or strategy); remove it or use another --out"
            )
        ranking = sample.ranking
        if len(ranking) != len(plan.orders[0]) or set(ranking) != doc_ids:
            return f"{key} ranks other candidates than the query has"
        return None

    return check


def rerank_pending(
    prepared: PreparedRun,
    *,
    progress: ProgressFn | None = None,
    reranker_factory: RerankerFactory = build_reranker,
    executor: ExecutorOptions = LOCAL,
    log_prompts: bool = False,
) -> RerankedRun:
    """Rerank every pending (query, order), appending each batch's samples as it finishes.

    Resumes from ``prepared.run_dir`` when it holds samples of the same configuration; the
    model is loaded (where ``executor`` says) only if something is left to do. Units that
    failed on every attempt (Ray) are written to ``failures.json`` and raised as one error
    after every other unit is saved; a rerun retries them. The caller holds the folder's
    lock (:func:`execute_run` does).
    """
    config = prepared.config
    executor.check_prompt_log(log_prompts)
    store = RunStore.open(prepared.run_dir, prepared.header.config_hash, prepared.header)
    done = store.scan_samples(check=_sample_checker(prepared))
    total = prepared.total_orders  # adaptive: the most it may show
    rounds = adaptive_rounds(prepared, done)
    units = PendingUnits(prepared, done, limits_of(rounds))
    pool: Executor | None = None
    log: PromptLog | None = None
    started = time.perf_counter()
    completed = total - units.orders
    pending = units.orders_per_query()
    queries = [len(prepared.dataset.sets) - len(pending), len(prepared.dataset.sets)]
    if progress:
        progress(completed, total, queries=(queries[0], queries[1]))
    try:
        if units:
            context = RunContext(
                device=config.device, seed=config.seed, batch_size=prepared.batch_size
            )
            pool = start_executor(executor, prepared.preset, context, reranker_factory)
            identity = _same_reranker(store, pool.identity())
            # bad data stops the run at its start, not midway
            pool.check_data(units.sets())
            if progress:  # the model is loaded: the reranking's rate starts now
                progress(completed, total, queries=(queries[0], queries[1]))
        if store.needs_header:  # only once the run may go on: a refusal leaves no trace
            store.write_header(prepared.header, prepared.query_records())
        if pool is not None:
            store.write_json(IDENTITY_FILE, identity)
            if log_prompts:
                log = PromptLog(prepared.run_dir, done)
                pool.log_prompts(log)

        bound = InvalidBound(total, config.max_invalid_share)

        def save(new: list[Sample]) -> None:
            nonlocal completed
            store.append(new)  # the index learns where they are
            completed += len(new)
            for sample in new:
                pending[sample.query_id] -= 1
                queries[0] += pending[sample.query_id] == 0
            if progress:
                progress(completed, total, queries=(queries[0], queries[1]))
            bound.add(new)  # after saving: a refused run keeps every order it finished

        if pool is not None:
            failed = pool.run(units, save).failed
            while rounds is not None and not failed:  # adaptive: the next round, if any
                # orders that came back invalid in this invocation wait for a rerun
                units = PendingUnits(prepared, done, rounds.limits(), retry_invalid=False)
                if not units:
                    break
                pending.clear()  # the queries this round gives more orders are pending again
                pending.update(units.orders_per_query())
                queries[0] = queries[1] - len(pending)
                failed = pool.run(units, save).failed
            _record_failures(store, failed, len(units))
        if rounds is not None:
            store.write_json(ADAPTIVE_FILE, rounds.record())
        model_identity = identity if pool else store.read_json(IDENTITY_FILE)
    finally:
        store.close()
        if log is not None:
            log.close()
        if pool is not None:
            pool.close()
    return RerankedRun(done, model_identity, time.perf_counter() - started)


class InvalidBound:
    """Counts the invalid orders of one invocation (the invalid orders of an earlier one are
    asked again, so they are among its pending orders) and stops the run, once, as soon as
    they exceed ``max_share`` of the run's ``total`` orders (:mod:`harness.validity`); later
    calls only count, so the finished batches saved while an error unwinds are kept."""

    def __init__(self, total: int, max_share: float) -> None:
        self.total = total
        self.max_share = max_share
        self.invalid = 0
        self.first: Sample | None = None
        self.refused = False

    def add(self, samples: Sequence[Sample]) -> None:
        for sample in samples:
            if sample.invalid:
                self.invalid += 1
                self.first = self.first or sample
        if self.refused or not too_many_invalid(self.invalid, self.total, self.max_share):
            return
        self.refused = True
        first = self.first
        assert first is not None  # at least one invalid order to exceed any share
        where = f"query {shorten(first.query_id, quote=True)}, order {first.order_index}"
        why = str((first.facts.get("extra") or {}).get(INVALID_ANSWER, "invalid answer"))
        raise HarnessError(refusal(self.invalid, self.total, self.max_share, why, where))


class PendingUnits(Sequence[Unit]):
    """The run's pending work units, the (query, batch of orders) reranker calls, in the order
    a local run makes them, without holding their plans or candidates: per unit only its set's
    position and its slice of the scheduled rows (8 bytes per order). A unit's plan is rebuilt
    from its seed when the unit is asked for; the last query's is kept, so the units of one
    query, asked for in turn, build it once. The rows are those pending when this was made
    (samples saved meanwhile do not shift them)."""

    def __init__(
        self,
        prepared: PreparedRun,
        done: SampleIndex | None,
        limits: Mapping[str, int] | None = None,
        retry_invalid: bool = True,
    ) -> None:
        self._prepared = prepared
        self._rows = array("q")  # every unit's order indices, unit after unit
        self._units = array("q")  # per unit: set position, first row, end row
        batch = prepared.batch_size
        for position, plan in enumerate(prepared.plans()):
            limit = limits.get(plan.query_id) if limits is not None else None
            scheduled = _schedule(plan, _pending_rows(plan, done, limit, retry_invalid))
            for start in range(0, len(scheduled), batch):
                rows = scheduled[start : start + batch]
                self._units.extend((position, len(self._rows), len(self._rows) + len(rows)))
                self._rows.extend(rows)
        self._last: tuple[int, CandidateSet, PermutationPlan] | None = None

    @property
    def orders(self) -> int:
        """How many (query, order) pairs the units rerank."""
        return len(self._rows)

    def __len__(self) -> int:
        return len(self._units) // 3

    @overload
    def __getitem__(self, index: int) -> Unit: ...
    @overload
    def __getitem__(self, index: slice) -> list[Unit]: ...
    def __getitem__(self, index: int | slice) -> Unit | list[Unit]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        position, begin, end = self._units[3 * (index % len(self)) : 3 * (index % len(self)) + 3]
        if self._last is None or self._last[0] != position:
            cset = self._prepared.dataset.sets[position]
            self._last = (position, cset, self._prepared.plan(cset))
        _, cset, plan = self._last
        return cset, plan, list(self._rows[begin:end])

    def orders_per_query(self) -> dict[str, int]:
        """Pending orders of each query with any."""
        sets = self._prepared.dataset.sets
        counts: dict[str, int] = {}
        for k in range(0, len(self._units), 3):
            position, begin, end = self._units[k : k + 3]
            query_id = sets[position].query_id
            counts[query_id] = counts.get(query_id, 0) + end - begin
        return counts

    def sets(self) -> Iterator[CandidateSet]:
        """The candidate sets with pending work, in the dataset's order."""
        sets = self._prepared.dataset.sets
        for position in dict.fromkeys(self._units[0::3]):
            yield sets[position]


def _record_failures(store: RunStore, failed: Sequence[FailedUnit], units: int) -> None:
    """Write the units that failed for good to ``failures.json`` and stop the run with one
    error naming the first; without failures, remove a previous run's file."""
    path = store.run_dir / FAILURES_FILE
    if not failed:
        path.unlink(missing_ok=True)
        return
    store.write_json(FAILURES_FILE, {"failed_units": [unit.to_dict() for unit in failed]})
    first = failed[0]
    raise HarnessError(
        f"{len(failed)} of {units} work units failed after {first.attempts} attempts (first: "
        f"query {first.query_id!r}, orders {list(first.order_indices)}: {first.error}); the "
        f"others are saved, every failure is listed in {path}; rerun to retry them"
    )


@dataclass(frozen=True)
class DryRun:
    """What the pending orders of a run would cost, counted without running them.

    ``queries``/``orders``: pending work; ``calls``: reranker calls (units of a batch of
    orders). ``forward_passes``, ``prompt_tokens``, ``generated_tokens``: sums over orders of
    what each order's ``CallFacts`` records, as the cost columns count them (a batched pass
    counts for every order it serves). ``usage``: a remote backend's request tally (requests
    it would send, cached ones, prompt tokens by the local tokenizer); empty for a local
    model. ``estimate``: a local model's time estimate and its basis (None for a remote one).
    """

    orders: int
    usage: dict[str, int]
    queries: int = 0
    calls: int = 0
    forward_passes: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    estimate: TimeEstimate | None = None


@dataclass(frozen=True)
class TimeEstimate:
    """A local dry run's wall-time estimate: the measured start (imports and model load) plus
    the reranking time of ``probe_orders`` real orders (``probe_calls`` calls), scaled to every
    pending order. ``answer_tokens``: the probe's mean generated tokens per answer, which the
    counted generative calls assume (None where the method generates nothing)."""

    seconds: float
    load_s: float
    probe_s: float
    probe_orders: int
    probe_calls: int
    answer_tokens: int | None = None

    @property
    def basis(self) -> str:
        rate = self.probe_s / max(self.probe_orders, 1)
        return (
            f"estimate, measured here: model load {self.load_s:.1f} s + {rate:.3g} s per order "
            f"({self.probe_orders} real orders in {self.probe_calls} calls took "
            f"{self.probe_s:.1f} s) x every pending order; data loading and metrics not "
            "included"
        )


PROBE_CALLS = 2  # reranker calls a local dry run runs for real to time them


def dry_run(
    prepared: PreparedRun,
    reranker_factory: RerankerFactory = build_reranker,
    probe_calls: int = PROBE_CALLS,
) -> DryRun:
    """Count what the pending orders would cost; no run folder is written.

    A remote backend: the requests and prompt tokens the run would send; nothing is sent.
    Requests the on-disk cache already answers are counted apart (and their answers used, so
    the windows after them are counted with the real prompts; after a request that would be
    sent, later windows of that order are counted on a stand-in answer, so their prompt
    tokens are an estimate).

    A local model: it is loaded and the first ``probe_calls`` reranker calls run for real and
    are timed; every other call runs on stand-in answers
    (:class:`~harness.backends.stand_in.StandInBackend`), so prompts are rendered and
    tokenized with the real tokenizer and passes counted by the method itself, and the time
    is extrapolated from the probe (:class:`TimeEstimate`).
    """
    config = prepared.config
    backend = backend_of(model_preset(prepared.preset))
    toolkit = getattr(adapter_class(model_preset(prepared.preset)), "toolkit", None)
    if toolkit is not None:
        raise HarnessError(
            f"--dry-run cannot count what reranker {prepared.preset.name!r} would cost: it "
            f"calls the {toolkit} toolkit, whose model calls the harness cannot stand in for"
        )
    remote = backend is not None and backend_class(backend).remote
    done: SampleIndex | None = None
    if (prepared.run_dir / "run.json").is_file():
        store = RunStore.open(prepared.run_dir, prepared.header.config_hash, prepared.header)
        done = store.scan_samples(check=_sample_checker(prepared), truncate=False)
    jobs = PendingUnits(prepared, done, limits_of(adaptive_rounds(prepared, done)))
    context = RunContext(
        device=config.device, seed=config.seed, batch_size=prepared.batch_size, dry_run=remote
    )
    started = time.perf_counter()
    reranker = reranker_factory(prepared.preset, context)
    load_s = time.perf_counter() - started
    try:
        for cset in jobs.sets():
            reranker.check_data(cset)
        if remote:
            samples = [s for job in jobs for s in rerank_unit(reranker, *job)]
            usage = model_reranker(reranker).backend.usage()  # type: ignore[attr-defined]
            return _counted(jobs, samples, usage)
        return _local_dry_run(jobs, reranker, load_s, probe_calls)
    finally:
        reranker.close()


def _local_dry_run(
    jobs: PendingUnits, reranker: Reranker, load_s: float, probe_calls: int
) -> DryRun:
    """Time the first calls on the real model, count the rest on stand-in answers."""
    from harness.backends.stand_in import StandInBackend

    stand_ins: list[StandInBackend] = []

    def stand_in(backend: Any) -> StandInBackend:
        stand_ins.append(StandInBackend(backend))
        return stand_ins[-1]

    wrap_backends(reranker, stand_in)
    probe = min(probe_calls, len(jobs))
    started = time.perf_counter()
    samples = [s for job in jobs[:probe] for s in rerank_unit(reranker, *job)]
    probe_s = time.perf_counter() - started
    for backend in stand_ins:
        backend.probing = False
    if stand_ins:  # a reranker without a model (a function, a control) is only timed
        samples += [s for job in jobs[probe:] for s in rerank_unit(reranker, *job)]
    lengths = [b.answer_length for b in stand_ins if b.answer_length is not None]
    probe_orders = sum(len(rows) for _, _, rows in jobs[:probe])
    estimate = TimeEstimate(
        seconds=load_s + probe_s / max(probe_orders, 1) * jobs.orders,
        load_s=load_s,
        probe_s=probe_s,
        probe_orders=probe_orders,
        probe_calls=probe,
        answer_tokens=lengths[0] if lengths else None,
    )
    return _counted(jobs, samples, {}, estimate)


def _counted(
    jobs: PendingUnits,
    samples: Sequence[Sample],
    usage: dict[str, int],
    estimate: TimeEstimate | None = None,
) -> DryRun:
    cost = total((sample.usage for sample in samples), Usage())
    return DryRun(
        orders=jobs.orders,
        usage=usage,
        queries=len(list(jobs.sets())),
        calls=len(jobs),
        forward_passes=cost.forward_passes,
        prompt_tokens=cost.prompt_tokens,
        generated_tokens=cost.generated_tokens,
        estimate=estimate,
    )


def write_results(
    prepared: PreparedRun, reranked: RerankedRun, executor: ExecutorOptions = LOCAL
) -> RunResults:
    """Compute metrics from the samples and write ``results.json`` and ``summary.md``."""
    results = compute_results(
        prepared,
        reranked.samples,
        reranked.reranker_identity,
        environment=environment() | {"device_used": _device_used(prepared)} | executor.describe(),
        # Reranking wall time of this invocation (only the remainder when it resumed).
        wall_time_s=round(reranked.seconds, 3),
        finished=utc_now(),
    )
    save_results(prepared.run_dir, results)
    return results


def _device_used(prepared: PreparedRun) -> str:
    """``--device`` when the reranker computes there; ``none`` for a control (first-stage
    asked for ``cuda`` still ran on no device), ``remote`` for a model behind a server."""
    return device_used(prepared.preset, prepared.config.device)


def compute_results(
    prepared: PreparedRun,
    samples: Mapping[tuple[str, int], Sample] | SampleIndex,
    reranker_identity: Mapping[str, Any],
    *,
    environment: Mapping[str, Any],
    wall_time_s: float,
    finished: str,
) -> RunResults:
    """Every metric of the run, with its header and the reranker's identity (pure but for
    reading the indexed samples from disk, one chunk of queries at a time)."""
    from harness.results.summary import summarize

    declared = prepared.header.reranker
    reranker = replace(
        declared,
        identity=dict(reranker_identity),
        # Declared by the preset or by the adapter class: either makes the gate check it.
        order_invariant=declared.order_invariant or bool(reranker_identity.get("order_invariant")),
    )
    metrics = summarize(
        prepared.dataset.sets,
        prepared.dataset.qrels,
        samples,
        seed=prepared.config.seed,
        # the recorded header's: an upgraded run written before levels keeps level 1
        relevance_level=prepared.header.relevance_level,
        metrics=prepared.metrics,
    )
    return RunResults.assemble(
        replace(prepared.header, reranker=reranker),
        metrics,
        environment=environment,
        wall_time_s=wall_time_s,
        finished=finished,
    )


def save_results(run_dir: Path, results: RunResults) -> None:
    """Write ``results.json`` and its Markdown summary (atomically each)."""
    from harness.results.markdown import render_summary

    store = RunStore(run_dir)
    store.write_json(RESULTS_FILE, results.to_streamed_dict())
    store.write_text(SUMMARY_FILE, render_summary(results))


def _pending_rows(
    plan: PermutationPlan,
    done: SampleIndex | None,
    limit: int | None = None,
    retry_invalid: bool = True,
) -> list[int]:
    """The order indices of ``plan`` with no sample on disk yet (of an adaptive run, those of
    its current round: at most ``limit`` design orders). An order whose answer was invalid is
    asked again when ``retry_invalid`` (a rerun: a fixed server fills it in), never twice in
    one invocation."""
    finished: set[int] = set()
    if done is not None:
        finished = done.done(plan.query_id)
        if retry_invalid:
            finished -= done.invalid_orders(plan.query_id)
    return [
        i for i in range(len(plan)) if i not in finished and in_round(plan.labels[i], limit)
    ]  # fmt: skip


def _schedule(plan: PermutationPlan, rows: list[int]) -> list[int]:
    """The pending rows in the order they are reranked: the identity repeats of ``--repeats``
    are spread evenly among the other rows, so that (where a backend batches orders) each
    rerun shares its batch with different orders than order 0 and the other reruns. Which
    order a row is never changes, only its batch."""
    repeats = [r for r in rows if plan.labels[r].is_repeat]
    if not repeats:
        return rows
    others = [r for r in rows if not plan.labels[r].is_repeat]
    spaced: list[int] = []
    start = 0
    for k, row in enumerate(repeats, start=1):
        cut = round(k * len(others) / (len(repeats) + 1))
        spaced += [*others[start:cut], row]
        start = cut
    return spaced + others[start:]


ROUNDING_ONLY_IDENTITY = frozenset({"prefix_sharing", "window_memo"})
"""Identity keys that change how a result is computed, not what: like the batch shape, they
move fp32 scores by rounding only (docs/scale.md), so a run started with one value may be
resumed with the other (and a folder from before the key existed still resumes)."""


def _same_reranker(store: RunStore, identity: dict[str, Any]) -> dict[str, Any]:
    """The reranker's identity as recorded; a resumed run must be continued by the same one."""
    normalised = json.loads(json.dumps(identity, default=str))
    previous = store.read_json(IDENTITY_FILE) or {}
    changed = sorted(
        k
        for k in previous.keys() | normalised.keys()
        if previous and previous.get(k) != normalised.get(k) and k not in ROUNDING_ONLY_IDENTITY
    )
    if changed:
        raise HarnessError(
            f"{store.run_dir} was started with a different model or prompt ({', '.join(changed)} "
            "changed); use another --out to compare them"
        )
    return normalised
