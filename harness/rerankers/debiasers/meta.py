"""Meta-rerankers: debiasers that wrap another reranker preset and are rerankers themselves.

A meta-reranker preset names an ``inner`` reranker preset and a method::

    name: psc-lft
    adapter: psc
    params: {inner: lft, shuffles: 5, aggregation: kemeny, seed: 0}

The harness measures a meta-reranker exactly as any other: it shows the meta-reranker its
own outer orders. Inside, the method shows the inner reranker further orders. Those are
*position* permutations drawn from a generator seeded by sha256 of (method, the meta seed,
the query id, the candidate ids in first-stage order) — content only, never the outer order
index, the batch or the worker — and applied to the order the meta-reranker was shown. So
an identical input gives an identical output wherever and whenever it runs, and two outer
orders give two independent sets of inner orders, as two runs of the method with fresh
randomness would. (Permuting the candidate set itself, ignoring the shown order, would make
every debiaser order-invariant by construction and its measured stability meaningless.)

Cost: each output's :class:`CallFacts` sums its inner calls' :class:`~harness.usage.Usage`
(``forward_passes``, ``prompt_tokens``, ``generated_tokens``, a server's requests) and
per-order ``latency_ms``; ``extra`` says how many inner orders it took and the inner parse
statuses. Provenance: :meth:`identity` carries the
inner preset and the inner reranker's identity (its model and prompt hashes surface at the
top level, where reports look for them).

Methods here: permutation self-consistency (``psc``) and bootstrapping (``bootstrap``);
:mod:`harness.rerankers.debiasers.sgs` and :mod:`harness.rerankers.debiasers.stella` add the other
two.
Aggregation is :mod:`harness.aggregation`'s (exact Kemeny, Borda, reciprocal-rank fusion).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harness import aggregation
from harness.data.model import CandidateSet
from harness.errors import HarnessError
from harness.rerankers.base import CallFacts, Reranker, RerankOutput, RunContext
from harness.rerankers.preset import RerankerPreset
from harness.rerankers.prompts.permutation_parser import worst_status
from harness.usage import Usage
from harness.validity import INVALID_ANSWER, INVALID_ANSWERS, invalid_answers

AGGREGATIONS: Mapping[str, str] = {
    "kemeny": "exact Kemeny-Young (integer program up to 30 items, then local search)",
    "borda": "Borda count, sum of (n - rank)",
    "rrf": f"reciprocal-rank fusion, k = {aggregation.RRF_K}",
}


@dataclass(frozen=True)
class MetaParams:
    """Every meta-reranker: ``inner`` (a preset name or a path to a preset YAML; a relative
    path is looked up beside the meta preset first) and ``seed`` (of its internal orders)."""

    inner: str
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.inner, str) or not self.inner:
            raise ValueError("param 'inner' must name a reranker preset")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"param 'seed' must be an integer, got {self.seed!r}")


@dataclass(frozen=True)
class PscParams(MetaParams):
    """Permutation self-consistency: ``shuffles`` (m >= 1) and ``aggregation``."""

    shuffles: int = 5
    aggregation: str = "kemeny"

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_int("shuffles", self.shuffles)
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(
                f"unknown aggregation {self.aggregation!r}; use one of {', '.join(AGGREGATIONS)}"
            )


@dataclass(frozen=True)
class BootstrapParams(MetaParams):
    """Bootstrapping: ``replicas`` (B >= 1; replica 0 is the shown order itself)."""

    replicas: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_int("replicas", self.replicas)


def positive_int(key: str, value: Any) -> None:
    """ValueError unless ``value`` is an integer >= 1 (booleans are not integers here)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"param {key!r} must be an integer >= 1, got {value!r}")


def content_rng(method: str, seed: int, candidate_set: CandidateSet) -> np.random.Generator:
    """The generator of a meta-reranker's internal orders for one candidate set: seeded from
    sha256 of the method, its seed, the query id and the candidate ids in first-stage order."""
    text = "\x1f".join((method, str(seed), candidate_set.query_id, *candidate_set.doc_ids))
    digest = hashlib.sha256(text.encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


@dataclass
class InnerTally:
    """The summed cost of the inner calls behind one outer order."""

    orders: int = 0
    latency_ms: float = 0.0
    usage: Usage = dataclasses.field(default_factory=Usage)
    statuses: Counter[str] = dataclasses.field(default_factory=Counter)
    invalid: int = 0  # inner answers that stayed invalid
    first_invalid: str | None = None

    def add(self, facts: CallFacts) -> None:
        self.orders += 1
        self.latency_ms += facts.latency_ms
        self.usage += facts.usage
        self.statuses[facts.parse_status] += 1
        self.invalid += invalid_answers({"extra": facts.extra})
        self.first_invalid = self.first_invalid or facts.extra.get(INVALID_ANSWER)

    def facts(self, call_ms: float, batch: int, extra: Mapping[str, Any]) -> CallFacts:
        usage = self.usage
        return CallFacts(
            latency_ms=self.latency_ms,
            call_latency_ms=call_ms,
            batch_size=batch,
            prompt_tokens=usage.prompt_tokens,
            generated_tokens=usage.generated_tokens,
            forward_passes=usage.forward_passes,
            parse_status=worst_status(list(self.statuses)),  # type: ignore[arg-type]
            http=usage.http,
            extra={
                "inner_orders": self.orders,
                "inner_parse_status_counts": dict(sorted(self.statuses.items())),
                # The inner calls' requests to a server, stored as a summary (the inner
                # records stay with the inner outputs, which are not stored).
                **({"http": usage.http.stored()} if usage.http.requests else {}),
                **(
                    {INVALID_ANSWERS: self.invalid, INVALID_ANSWER: self.first_invalid}
                    if self.invalid
                    else {}
                ),
                **extra,
            },
        )


class MetaReranker(Reranker):
    """Base of the debiasers: holds the inner reranker and its preset, runs inner orders in
    batches of the run's ``batch_size`` and sums their cost."""

    method: ClassVar[str]
    params_type: ClassVar[type[MetaParams]]

    def __init__(
        self,
        name: str,
        context: RunContext,
        inner: Reranker,
        inner_preset: RerankerPreset,
        params: MetaParams,
    ) -> None:
        super().__init__(name, context)
        if not isinstance(params, self.params_type):
            raise TypeError(f"{type(self).__name__} takes {self.params_type.__name__}")
        self.inner = inner
        self.inner_preset = inner_preset
        self.params = params

    @classmethod
    def preset_extras(cls, preset: RerankerPreset, params: MetaParams) -> dict[str, Any]:
        """Further constructor arguments read from the preset's surroundings (STELLA's
        calibration file), checked before any model loads."""
        return {}

    def identity(self) -> dict[str, Any]:
        inner = self.inner.identity()
        data = {
            **super().identity(),
            "method": self.method,
            "params": dataclasses.asdict(self.params),
            "internal_orders": "position permutations of the shown order, numpy default_rng("
            "sha256(method, seed, query id, candidate ids in first-stage order))",
            "inner": {
                "preset": {k: v for k, v in self.inner_preset.to_dict().items() if k != "source"},
                "identity": inner,
            },
        }
        for key in ("model", "prompt_sha256"):  # where reports and STELLA look for them
            if key in inner:
                data[key] = inner[key]
        return data

    def inner_outputs(
        self, candidate_set: CandidateSet, orders: Sequence[np.ndarray]
    ) -> list[RerankOutput]:
        """The inner reranker's outputs for ``orders``, in batches of the run's batch size; on a
        remote backend in one call, so its requests go out ``concurrency`` at a time."""
        outputs: list[RerankOutput] = []
        remote = getattr(model_reranker(self), "backend", None)
        size = len(orders) if getattr(remote, "remote", False) else self.context.batch_size
        size = max(1, size)
        for start in range(0, len(orders), size):
            chunk = np.asarray(orders[start : start + size], dtype=np.int64)
            outputs.extend(self.inner.rerank(candidate_set, chunk))
        return outputs

    @property
    def parallel_calls(self) -> int:
        """As many calls at once as the inner reranker allows (a server's concurrency)."""
        return self.inner.parallel_calls

    def close(self) -> None:
        self.inner.close()

    def stop(self) -> None:
        self.inner.stop()

    def check_data(self, candidate_set: CandidateSet) -> None:
        self.inner.check_data(candidate_set)


class _EnsembleReranker(MetaReranker):
    """Rerank several inner orders per outer order — the shown order permuted by each of the
    method's content-seeded position permutations — and aggregate their outputs."""

    @abstractmethod
    def position_permutations(self, candidate_set: CandidateSet) -> np.ndarray:
        """[k, n] position permutations applied to every shown order of this set."""

    @abstractmethod
    def aggregate(self, rankings: list[list[int]]) -> tuple[tuple[int, ...], dict[str, Any]]:
        """One consensus of candidate-index rankings, and facts about how it was formed."""

    def inner_orders(self, shown: np.ndarray, permutations: np.ndarray) -> list[np.ndarray]:
        return [shown[p] for p in permutations]

    def _rerank_batch(self, candidate_set: CandidateSet, orders: np.ndarray) -> list[RerankOutput]:
        started = time.perf_counter()
        permutations = self.position_permutations(candidate_set)
        per_order = [self.inner_orders(row, permutations) for row in orders]
        flat = [o for group in per_order for o in group]
        outputs = self.inner_outputs(candidate_set, flat)
        index = {doc_id: i for i, doc_id in enumerate(candidate_set.doc_ids)}
        ids = candidate_set.doc_ids
        results, cursor = [], 0
        aggregated = []
        for group in per_order:
            chunk = outputs[cursor : cursor + len(group)]
            cursor += len(group)
            tally = InnerTally()
            for output in chunk:
                tally.add(output.facts)
            rankings = [[index[d] for d in output.ranking] for output in chunk]
            consensus, extra = self.aggregate(rankings)
            aggregated.append((consensus, tally, extra))
        call_ms = (time.perf_counter() - started) * 1000.0
        for consensus, tally, extra in aggregated:
            results.append(
                RerankOutput(
                    ranking=tuple(ids[i] for i in consensus),
                    facts=tally.facts(call_ms, len(orders), {"method": self.method, **extra}),
                )
            )
        return results


class PermutationSelfConsistency(_EnsembleReranker):
    """Permutation self-consistency (Tang et al. 2023): rerank m shuffles of the shown order,
    aggregate the m outputs (exact Kemeny by default, or Borda, or RRF with k = 60).
    A sliding-window inner reranker contributes its full output ranking per shuffle.

    Params: :class:`PscParams`.
    """

    method = "psc"
    params_type = PscParams
    params: PscParams

    def position_permutations(self, candidate_set: CandidateSet) -> np.ndarray:
        rng = content_rng(self.method, self.params.seed, candidate_set)
        n = len(candidate_set)
        return np.array([rng.permutation(n) for _ in range(self.params.shuffles)])

    def aggregate(self, rankings: list[list[int]]) -> tuple[tuple[int, ...], dict[str, Any]]:
        name = self.params.aggregation
        if name == "kemeny":
            consensus = aggregation.kemeny_rankings(rankings)
            return consensus.order, {
                "aggregation": name,
                "kemeny_exact": consensus.exact,
                "kemeny_cost": consensus.cost,
            }
        if name == "borda":
            return aggregation.borda(rankings), {"aggregation": name}
        return aggregation.reciprocal_rank_fusion(rankings), {"aggregation": name}


class Bootstrapping(_EnsembleReranker):
    """Bootstrapping (LLMRank; InvariRank's baseline): B replicas — the shown order and B - 1
    shuffles of it, each drawn separately — aggregated by Borda (sum of n - rank).

    LLMRank's own code shuffles with ``np.random.shuffle(idxs.T)``, which permutes the columns
    of the replica matrix jointly, so every replica gets the SAME order and the ensemble is one
    order repeated; here every replica draws its own permutation.

    Params: :class:`BootstrapParams`.
    """

    method = "bootstrap"
    params_type = BootstrapParams
    params: BootstrapParams

    def position_permutations(self, candidate_set: CandidateSet) -> np.ndarray:
        rng = content_rng(self.method, self.params.seed, candidate_set)
        n = len(candidate_set)
        rows = [np.arange(n)] + [rng.permutation(n) for _ in range(self.params.replicas - 1)]
        return np.array(rows)

    def aggregate(self, rankings: list[list[int]]) -> tuple[tuple[int, ...], dict[str, Any]]:
        return aggregation.borda(rankings), {"aggregation": "borda"}


def model_reranker(reranker: Reranker) -> Reranker:
    """The reranker whose model computes: ``reranker`` itself, or a debiaser's innermost one."""
    while isinstance(reranker, MetaReranker):
        reranker = reranker.inner
    return reranker


def wrap_backends(reranker: Reranker, wrap: Callable[[Any], Any]) -> None:
    """Replace the backend of ``reranker`` and of every reranker it holds (a debiaser's inner
    ones) with ``wrap(backend)``, once per reranker; a backend already of ``wrap``'s type,
    when ``wrap`` is a class, is left as it is (the prompt log, the dry run's stand-ins)."""
    seen: set[int] = set()
    stack = [reranker]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        backend = getattr(current, "backend", None)
        if backend is not None and not (isinstance(wrap, type) and isinstance(backend, wrap)):
            current.backend = wrap(backend)  # type: ignore[attr-defined]
        stack += [v for v in vars(current).values() if isinstance(v, Reranker)]


# ---------------------------------------------------------------------------------------------
# Building a meta-reranker from its preset (used by the registry).


def preset_key(preset: RerankerPreset) -> str:
    """What identifies a preset in a chain of meta-rerankers: its file, else its name."""
    return str(Path(preset.source).resolve()) if preset.source else preset.name


def meta_params(cls: type[MetaReranker], preset: RerankerPreset) -> MetaParams:
    """The preset's params as the method's typed dataclass; one-line errors."""
    known = [f.name for f in dataclasses.fields(cls.params_type)]
    unknown = sorted(set(preset.params) - set(known))
    if unknown:
        raise HarnessError(
            f"{preset.where}: unknown param {unknown[0]!r}; known params: {', '.join(known)}"
        )
    if "inner" not in preset.params:
        raise HarnessError(f"{preset.where}: a {cls.method} meta-reranker needs param 'inner'")
    try:
        return cls.params_type(**dict(preset.params))
    except ValueError as exc:
        raise HarnessError(f"{preset.where}: {exc}") from exc


def inner_preset(
    preset: RerankerPreset,
    params: MetaParams,
    chain: tuple[str, ...],
    resolve: Callable[[str], RerankerPreset],
) -> RerankerPreset:
    """Resolve the inner preset (beside the meta preset first, for a relative YAML path) and
    refuse a cycle of meta-rerankers."""
    name = params.inner
    if preset.source and Path(name).suffix in {".yaml", ".yml"} and not Path(name).is_absolute():
        beside = Path(preset.source).parent / name
        if beside.is_file():
            name = str(beside)
    try:
        inner = resolve(name)
    except HarnessError as exc:
        raise HarnessError(f"{preset.where}: inner reranker: {exc}") from exc
    key = preset_key(inner)
    if key in chain:
        names = " -> ".join(Path(k).stem for k in (*chain, key))
        raise HarnessError(f"{preset.where}: meta-rerankers form a cycle ({names})")
    return inner
