"""The default executor: one reranker in this process (threads for a remote backend)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import nullcontext
from typing import Any

from harness.data.model import CandidateSet
from harness.executors import Outcome, SaveFn, Unit
from harness.permutations import PermutationPlan
from harness.rerankers.base import Reranker
from harness.results.prompt_log import PromptLog
from harness.results.store import Sample


class LocalExecutor:
    """Runs units with one reranker here; a failing unit stops the run (as it always has)."""

    def __init__(self, reranker: Reranker) -> None:
        self.reranker = reranker
        self.log: PromptLog | None = None

    def identity(self) -> dict[str, Any]:
        return normalised_identity(self.reranker)

    def check_data(self, sets: Iterable[CandidateSet]) -> None:
        for cset in sets:
            self.reranker.check_data(cset)

    def run(self, units: Sequence[Unit], save: SaveFn) -> Outcome:
        run_calls(self.reranker, units, save, self.log)
        return Outcome()

    def log_prompts(self, log: PromptLog) -> None:
        log.attach(self.reranker)
        self.log = log

    def close(self) -> None:
        self.reranker.close()


def normalised_identity(reranker: Reranker) -> dict[str, Any]:
    """The reranker's identity as JSON stores it (what ``reranker_identity.json`` holds)."""
    return json.loads(json.dumps(reranker.identity(), default=str))


def run_calls(
    reranker: Reranker, jobs: Sequence[Unit], save: SaveFn, log: PromptLog | None = None
) -> None:
    """Run the reranker calls and ``save`` their samples in the jobs' order.

    A reranker on a remote backend allows ``parallel_calls`` calls at once (threads waiting
    on a server): calls of different queries and orders then run concurrently, while the
    windows inside one call stay sequential. Samples are still saved in job order, so the
    samples file does not depend on which request finished first. When a call fails (or
    Ctrl-C), the calls not started are cancelled, the running ones finish, and every call
    that finished is saved before the error propagates.
    """
    workers = max(1, int(getattr(reranker, "parallel_calls", 1)))
    if workers == 1 or len(jobs) < 2:
        for job in jobs:
            save(rerank_unit(reranker, *job, log))
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="harness-call")
    futures = [pool.submit(rerank_unit, reranker, *job, log) for job in jobs]
    saved = 0
    try:
        for future in futures:
            samples = future.result()
            saved += 1  # before saving: a save interrupted after writing is not repeated
            save(samples)
    except BaseException:
        reranker.stop()  # requests not yet sent are refused, retry waits end
        for future in futures[saved:]:
            future.cancel()
        wait(futures[saved:])
        for future in futures[saved:]:
            if not future.cancelled() and future.exception() is None:
                save(future.result())
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def rerank_unit(
    reranker: Reranker,
    cset: CandidateSet,
    plan: PermutationPlan,
    rows: list[int],
    log: PromptLog | None = None,
) -> list[Sample]:
    """One reranker call over the orders ``rows`` of ``plan``: one sample per order, keyed by
    (query, order index) so where or when it ran does not matter."""
    with log.call(cset.query_id, rows) if log is not None else nullcontext():
        outputs = reranker.rerank(cset, plan.orders[rows])
    return [
        Sample(
            query_id=cset.query_id,
            order_index=row,
            label=plan.labels[row],
            shown=tuple(int(i) for i in plan.orders[row]),
            ranking=output.ranking,
            scores=None if output.scores is None else dict(output.scores),
            facts=output.facts.to_dict(),
        )
        for row, output in zip(rows, outputs, strict=True)
    ]
