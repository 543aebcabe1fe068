"""The Ray executor: a pool of actors, each holding one reranker, fed (query, batch of orders)
units so every actor stays busy; the driver alone appends samples.

Results equal a local run's because nothing a unit computes depends on where or when it runs:
units are the local run's reranker calls (same batches), seeds derive from content (query id,
candidate set, run seed), and samples are keyed by (query, order index). Faults: a unit whose
actor died is re-run on another actor (a replacement actor is started); a unit that raises, or
whose actor dies, is tried up to ``attempts`` times in all, then recorded as failed. Ctrl-C
saves what finished and removes the actors.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any

from harness.data.model import CandidateSet
from harness.errors import HarnessError
from harness.executors import (
    ExecutorOptions,
    FailedUnit,
    Outcome,
    RerankerFactory,
    SaveFn,
    Unit,
)
from harness.rerankers.base import RunContext
from harness.rerankers.preset import RerankerPreset
from harness.results.store import Sample

IN_FLIGHT_PER_ACTOR = 2
"""Units queued on each actor: the next one is there when the current one ends."""

CLOSE_WAIT_S = 10.0
"""How long closing waits for the actors' rerankers to close before removing the actors."""

CHECK_CHUNK = 256
"""Candidate sets sent to an actor at a time to be checked before the run."""

WAIT_S = 0.5
"""How long the driver blocks on the cluster at a time (Ctrl-C is noticed between waits)."""


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise HarnessError("--executor ray needs Ray: pip install 'harness-rerank[ray]'") from None
    return ray


class Worker:
    """What each actor runs: one reranker, built once, reranking the units sent to it."""

    def __init__(
        self, preset: RerankerPreset, context: RunContext, factory: RerankerFactory
    ) -> None:
        self.reranker = factory(preset, context)

    def identity(self) -> dict[str, Any]:
        from harness.executors.local import normalised_identity

        return normalised_identity(self.reranker)

    def check_data(self, sets: Iterable[CandidateSet]) -> None:
        for cset in sets:
            self.reranker.check_data(cset)

    def pid(self) -> int:
        return os.getpid()

    def rerank(self, unit: Unit) -> list[Sample]:
        from harness.executors.local import rerank_unit

        return rerank_unit(self.reranker, *unit)

    def close(self) -> None:
        self.reranker.close()


@dataclass
class _Slot:
    """One actor of the pool and the units it holds."""

    actor: Any
    running: int = 0


class RayExecutor:
    """Runs units on a pool of Ray actors (see the module docstring)."""

    def __init__(self, ray: Any, options: ExecutorOptions, spawn: Any, started_ray: bool) -> None:
        self.ray = ray
        self.options = options
        self._spawn = spawn  # () -> a new actor handle
        self._started_ray = started_ray
        self.slots: list[_Slot] = []
        self.replaced = 0

    @classmethod
    def start(
        cls,
        options: ExecutorOptions,
        preset: RerankerPreset,
        context: RunContext,
        factory: RerankerFactory,
    ) -> RayExecutor:
        ray = import_ray()
        started = False
        if not ray.is_initialized():
            _init_keeping_sigterm(ray, options.address)
            started = options.address is None
        gpus, cpus = options.worker_resources(preset, context.device)
        workers = options.workers or _workers_that_fit(ray.cluster_resources(), gpus, cpus)
        if context.device.startswith("cuda"):
            context = replace(context, device="cuda")  # an actor sees its own GPU(s) only
        remote = ray.remote(num_cpus=cpus, num_gpus=gpus)(Worker)

        def spawn() -> Any:
            return remote.remote(preset, context, factory)

        executor = cls(ray, options, spawn, started)
        try:
            executor.slots = [_Slot(spawn()) for _ in range(workers)]
            ray.get([slot.actor.pid.remote() for slot in executor.slots])  # models loaded
        except BaseException:
            executor.close()
            raise
        return executor

    def identity(self) -> dict[str, Any]:
        return self.ray.get(self.slots[0].actor.identity.remote())

    def check_data(self, sets: Iterable[CandidateSet]) -> None:
        """Checked on one actor, a chunk of sets at a time (the driver holds one chunk)."""
        sets = iter(sets)
        while chunk := list(itertools.islice(sets, CHECK_CHUNK)):
            self.ray.get(self.slots[0].actor.check_data.remote(chunk))

    def run(self, units: Sequence[Unit], save: SaveFn) -> Outcome:
        ray = self.ray
        ActorUnavailable = getattr(
            ray.exceptions, "ActorUnavailableError", ray.exceptions.RayActorError
        )
        queue: deque[int] = deque(range(len(units)))
        attempts = [0] * len(units)
        running: dict[Any, tuple[int, _Slot, Any]] = {}  # ref -> (unit, slot, its actor)
        outcome = Outcome()

        def dispatch() -> None:
            for slot in self.slots:
                while queue and slot.running < IN_FLIGHT_PER_ACTOR:
                    unit = queue.popleft()
                    running[slot.actor.rerank.remote(units[unit])] = (unit, slot, slot.actor)
                    slot.running += 1

        def settle(ref: Any) -> None:
            unit, slot, actor = running.pop(ref)
            slot.running -= 1
            try:
                samples = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the unit raised, or its actor died
                if isinstance(exc, ray.exceptions.RayActorError | ActorUnavailable):
                    self._replace(slot, actor)
                attempts[unit] += 1
                if attempts[unit] < self.options.attempts:
                    queue.appendleft(unit)  # next free actor, whichever it is
                else:
                    cset, _, rows = units[unit]
                    outcome.failed.append(
                        FailedUnit(cset.query_id, tuple(rows), attempts[unit], _cause(exc))
                    )
                return
            save(samples)

        try:
            dispatch()
            while running:
                ready, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_S)
                for ref in ready:
                    settle(ref)
                dispatch()
        except BaseException:  # Ctrl-C or a failing save: keep what finished; close() kills
            ready = (
                ray.wait(list(running), num_returns=len(running), timeout=0)[0] if running else []
            )
            for ref in ready:
                with suppress(Exception):
                    samples = ray.get(ref)
                    running.pop(ref)
                    save(samples)
            raise
        return outcome

    def _replace(self, slot: _Slot, dead: Any) -> None:
        """Start a new actor in place of the dead one, once however many of its units come
        back (the units count the death as an attempt, so a unit that kills every actor it
        runs on ends up failed rather than looping)."""
        if slot.actor is dead:
            self.replaced += 1
            slot.actor = self._spawn()

    def log_prompts(self, log: Any) -> None:
        self.options.check_prompt_log(True)  # refused up front by the runner; kept honest here

    def close(self) -> None:
        """Let each reranker close (servers it started, files), then remove the actors; an
        actor still busy after ``CLOSE_WAIT_S`` (Ctrl-C mid-unit) is removed regardless."""
        with suppress(Exception):
            closing = [slot.actor.close.remote() for slot in self.slots]
            self.ray.wait(closing, num_returns=len(closing), timeout=CLOSE_WAIT_S)
        for slot in self.slots:
            with suppress(Exception):  # already dead
                self.ray.kill(slot.actor)
        self.slots = []
        if self._started_ray:
            self.ray.shutdown()


def _init_keeping_sigterm(ray: Any, address: str | None) -> None:
    """``ray.init``, keeping the caller's SIGTERM handler (Ray installs one that exits at
    once; the CLI's turns SIGTERM into Ctrl-C, which saves what finished)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        ray.init(
            address=address, include_dashboard=False, logging_level="warning", log_to_driver=False
        )
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _workers_that_fit(resources: dict[str, float], gpus: float, cpus: float) -> int:
    """As many actors as the cluster has GPUs (GPU workers) or CPUs for (CPU workers)."""
    if gpus > 0:
        fit = int(resources.get("GPU", 0) // gpus)
        if fit < 1:
            raise HarnessError(
                f"the Ray cluster has {resources.get('GPU', 0):g} GPUs; a worker needs {gpus:g} "
                "(pass --device cpu or --worker-gpus)"
            )
        return fit
    return max(1, int(resources.get("CPU", 1) // max(cpus, 1e-9)))


def _cause(exc: BaseException) -> str:
    """The error a unit raised, on one line (Ray wraps it with a remote traceback)."""
    cause = getattr(exc, "cause", None) or exc
    return f"{type(cause).__name__}: {cause}".splitlines()[0]
