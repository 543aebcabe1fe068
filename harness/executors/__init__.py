"""Where the reranker calls of a run execute: in this process (``local``) or on a Ray cluster
(``ray``). The runner hands an executor the pending work units and a ``save`` callback; the
executor decides where each unit runs, never what it computes, so both give the same samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.data.model import CandidateSet
from harness.errors import HarnessError
from harness.permutations import PermutationPlan
from harness.rerankers.base import Reranker, RunContext
from harness.rerankers.preset import RerankerPreset
from harness.results.prompt_log import PromptLog
from harness.results.store import Sample

EXECUTORS = ("local", "ray")

Unit = tuple[CandidateSet, PermutationPlan, list[int]]
"""One work unit: a query's candidates, its permutation plan, and the order indices to rerank
in one reranker call (a batch of orders)."""

RerankerFactory = Callable[[RerankerPreset, RunContext], Reranker]
SaveFn = Callable[[list[Sample]], None]


@dataclass(frozen=True)
class ExecutorOptions:
    """How to execute a run; none of it changes the results, so none of it is in the config
    hash (a run started locally may be resumed on Ray and the other way round)."""

    kind: str = "local"
    workers: int | None = None  # ray: actors (one reranker each); default: what fits the cluster
    address: str | None = None  # ray: cluster to join; default: start a local one
    gpus_per_worker: float | None = None  # default: the preset's, else 1 on cuda, else 0
    cpus_per_worker: float | None = None  # default: the preset's, else 1
    attempts: int = 3  # ray: tries per unit before it is recorded as failed

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise HarnessError(f"--executor {self.kind!r}: choose one of {', '.join(EXECUTORS)}")
        if self.workers is not None and self.workers < 1:
            raise HarnessError(f"--workers {self.workers}: must be at least 1")
        if self.attempts < 1:
            raise HarnessError(f"attempts {self.attempts}: must be at least 1")

    def worker_resources(self, preset: RerankerPreset, device: str) -> tuple[float, float]:
        """(GPUs, CPUs) per Ray actor: the flags, else the preset's ``resources``, else one
        GPU on a CUDA device (none otherwise) and one CPU."""
        gpus = self.gpus_per_worker
        if gpus is None:
            gpus = preset.resources.get("num_gpus", 1.0 if device.startswith("cuda") else 0.0)
        cpus = self.cpus_per_worker
        if cpus is None:
            cpus = preset.resources.get("num_cpus", 1.0)
        return float(gpus), float(cpus)

    def check_prompt_log(self, log_prompts: bool) -> None:
        """The prompt log is written by the process that calls the model: the local one."""
        if log_prompts and self.kind != "local":
            raise HarnessError(
                f"--log-prompts works with --executor local only (not {self.kind!r} yet)"
            )

    def describe(self) -> dict[str, Any]:
        """What the results' environment records about the execution."""
        if self.kind == "ray":
            from importlib.metadata import version

            return {"executor": "ray", "ray_version": version("ray")}
        return {"executor": self.kind}


@dataclass(frozen=True)
class FailedUnit:
    """A unit that failed on every attempt: which orders of which query, and why."""

    query_id: str
    order_indices: tuple[int, ...]
    attempts: int
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "query_id": self.query_id,
            "order_indices": list(self.order_indices),
            "attempts": self.attempts,
            "error": self.error,
        }


@dataclass
class Outcome:
    """What an executor reports after its units: the units that failed for good."""

    failed: list[FailedUnit] = field(default_factory=list)


class Executor(Protocol):
    """A pool of rerankers (one, or one per worker) that runs units and saves their samples."""

    def identity(self) -> dict[str, Any]:
        """The reranker's identity (model, prompt, ...), JSON-normalised."""
        ...

    def check_data(self, sets: Iterable[CandidateSet]) -> None:
        """Raise (HarnessError) on data the reranker cannot take, before any unit runs."""
        ...

    def run(self, units: Sequence[Unit], save: SaveFn) -> Outcome:
        """Run every unit, calling ``save`` with each finished unit's samples (from the
        calling thread only). Ctrl-C propagates after what finished is saved."""
        ...

    def log_prompts(self, log: PromptLog) -> None:
        """Record every model call's prompt and output in ``log`` (``--log-prompts``)."""
        ...

    def close(self) -> None: ...


def executor_options(flags: Mapping[str, Any]) -> ExecutorOptions:
    """How to execute the run, from the execution options among ``flags`` (CLI or API)."""
    return ExecutorOptions(
        kind=flags["executor"],
        workers=flags["workers"],
        address=flags["ray_address"],
        gpus_per_worker=flags["worker_gpus"],
        cpus_per_worker=flags["worker_cpus"],
    )
