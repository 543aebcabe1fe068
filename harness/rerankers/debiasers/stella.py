"""STELLA (arXiv 2312.15746, as InvariRank's baseline reimplements it): calibrate a
position-transition matrix once on held-out probe queries, then rank by Bayesian updates over
reshuffled inner calls.

**Calibration** (:func:`calibrate`, ``harness stella-calibrate``): for each probe query, each
judged-relevant candidate is shown at every input position ``p`` (the others in a seeded
shuffle), ``repeats`` times; the inner reranker's top pick was shown at position ``q``, and
``counts[p, q]`` grows by one. ``T = (counts + smoothing)`` with rows normalised is
``P(top pick shown at q | relevant shown at p)``. The artifact (:class:`StellaArtifact`, a JSON
file) keeps the matrix with the provenance it was built with: the inner preset (adapter and
params), the inner model and prompt hashes, the candidate count, the dataset and the probe
query ids.

**Inference** (:class:`Stella`): a uniform prior over candidates; call ``u`` shows the shown
order (u = 0) or a content-seeded position shuffle of it, the inner's top pick is at shown
position ``q`` and the prior over the shown positions is multiplied by ``T[:, q]``. Up to
``max_updates`` calls, stopping early when the entropy changes by at most ``tolerance`` for
``convergence_steps`` calls; the answer is the posterior of lowest entropy (ties: that call's
raw rank, then first-stage index), or the raw ranking of the first call when the posterior is
uninformative (information gain at most ``minimum_gain``). An artifact built for another
model, prompt, inner preset or candidate count is refused, and so is a query it was built on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.data.model import CandidateSet, Dataset
from harness.errors import HarnessError
from harness.files import read_json_object
from harness.rerankers.base import Reranker, RerankOutput, RunContext
from harness.rerankers.debiasers.meta import InnerTally, MetaParams, MetaReranker, content_rng
from harness.rerankers.preset import RerankerPreset

ARTIFACT_FORMAT = "harness-stella/1"
# What must match between the artifact and the inner reranker at inference.
BOUND = ("reranker", "model", "prompt", "candidate_count")
# What a STELLA run's identity repeats from its calibration.
CALIBRATION_FACTS = (
    "dataset",
    "dataset_fingerprint",
    "candidate_count",
    "probe_query_ids",
    "repeats",
    "smoothing",
    "seed",
)


@dataclass(frozen=True)
class StellaParams(MetaParams):
    """STELLA: ``artifact`` (the calibration JSON; relative paths beside the preset first,
    then the working directory), ``max_updates``, ``tolerance``, ``convergence_steps``,
    ``minimum_gain``."""

    artifact: str = ""
    max_updates: int = 10
    tolerance: float = 1e-6
    convergence_steps: int = 3
    minimum_gain: float = 1e-6

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.artifact:
            raise ValueError(
                "param 'artifact' must name a STELLA calibration file "
                "(make one with `harness stella-calibrate`)"
            )
        for key in ("max_updates", "convergence_steps"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"param {key!r} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class StellaArtifact:
    """A calibrated transition matrix and the provenance it is bound to."""

    transition_matrix: tuple[tuple[float, ...], ...]
    counts: tuple[tuple[int, ...], ...]
    provenance: Mapping[str, Any]
    format: str = ARTIFACT_FORMAT

    @property
    def matrix(self) -> np.ndarray:
        return np.asarray(self.transition_matrix, dtype=np.float64)

    @property
    def size(self) -> int:
        return len(self.transition_matrix)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "provenance": dict(self.provenance),
            "transition_matrix": [list(r) for r in self.transition_matrix],
            "counts": [list(r) for r in self.counts],
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> StellaArtifact:
        data = read_json_object(path, "STELLA calibration file")
        if data.get("format") != ARTIFACT_FORMAT:
            raise HarnessError(f"{path}: not a STELLA calibration file ({ARTIFACT_FORMAT})")
        matrix = np.asarray(data.get("transition_matrix"), dtype=np.float64)
        n = matrix.shape[0] if matrix.ndim == 2 else 0
        if matrix.ndim != 2 or matrix.shape != (n, n) or n < 1 or (matrix < 0).any():
            raise HarnessError(f"{path}: the transition matrix is not a square non-negative matrix")
        if not np.allclose(matrix.sum(axis=1), 1.0):
            raise HarnessError(f"{path}: the transition matrix rows do not sum to 1")
        provenance = data.get("provenance")
        if not isinstance(provenance, dict) or any(k not in provenance for k in BOUND):
            raise HarnessError(f"{path}: calibration provenance is missing ({', '.join(BOUND)})")
        return cls(
            transition_matrix=tuple(tuple(r) for r in matrix.tolist()),
            counts=tuple(tuple(int(v) for v in r) for r in data.get("counts", [])),
            provenance=provenance,
        )


def bound_provenance(inner_preset: RerankerPreset, inner: Reranker, n: int) -> dict[str, Any]:
    """What an artifact is bound to: the inner preset, its model and prompt, the count."""
    identity = json.loads(json.dumps(inner.identity(), default=str))
    return {
        "reranker": {"adapter": inner_preset.adapter, "params": dict(inner_preset.params)},
        "model": identity.get("model"),
        "prompt": identity.get("prompt_sha256", identity.get("prompt_hash")),
        "candidate_count": n,
    }


def check_bound(artifact: StellaArtifact, expected: Mapping[str, Any], where: str) -> None:
    """Refuse an artifact built for another reranker, model, prompt or candidate count."""
    expected = json.loads(json.dumps(expected, default=str))
    changed = [k for k in BOUND if artifact.provenance.get(k) != expected.get(k)]
    if changed:
        shown = "; ".join(
            f"{k}: calibrated {_short(artifact.provenance.get(k))}, now {_short(expected.get(k))}"
            for k in changed
        )
        raise HarnessError(
            f"{where}: the STELLA calibration was built for something else ({shown}); "
            "recalibrate with `harness stella-calibrate`"
        )


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def calibrate(
    inner_preset: RerankerPreset,
    inner: Reranker,
    dataset: Dataset,
    *,
    repeats: int = 5,
    smoothing: float = 1.0,
    seed: int = 0,
    dataset_name: str = "",
) -> StellaArtifact:
    """Build the transition matrix on ``dataset`` (the probe split: every set must have the
    same candidate count and none may be evaluated later)."""
    if repeats < 1 or smoothing < 0:
        raise HarnessError("STELLA calibration needs repeats >= 1 and smoothing >= 0")
    sizes = {len(s) for s in dataset.sets}
    if len(sizes) != 1:
        raise HarnessError(
            f"STELLA calibration needs one candidate count, the probe sets have {sorted(sizes)} "
            "(set --depth)"
        )
    (n,) = sizes
    counts = np.zeros((n, n), dtype=np.int64)
    used = []
    for cset in dataset.sets:
        judged = dataset.qrels.get(cset.query_id, {})
        relevant = [i for i, c in enumerate(cset.candidates) if judged.get(c.doc_id, 0) > 0]
        if not relevant:
            continue
        used.append(cset.query_id)
        rng = content_rng("stella-calibration", seed, cset)
        orders, placed = [], []
        for item in relevant:
            others = [i for i in range(n) if i != item]
            for position in range(n):
                for _ in range(repeats):
                    rest = [others[k] for k in rng.permutation(n - 1)]
                    orders.append([*rest[:position], item, *rest[position:]])
                    placed.append(position)
        outputs = []
        for start in range(0, len(orders), max(1, inner.context.batch_size)):
            chunk = np.asarray(orders[start : start + inner.context.batch_size], dtype=np.int64)
            outputs.extend(inner.rerank(cset, chunk))
        index = {d: i for i, d in enumerate(cset.doc_ids)}
        for order, position, output in zip(orders, placed, outputs, strict=True):
            counts[position, order.index(index[output.ranking[0]])] += 1
    if not used:
        raise HarnessError("STELLA calibration: no probe query has a judged-relevant candidate")
    smoothed = counts + smoothing
    matrix = smoothed / smoothed.sum(axis=1, keepdims=True)
    provenance = {
        **bound_provenance(inner_preset, inner, n),
        "dataset": dataset_name,
        "dataset_fingerprint": dataset.fingerprint,
        "probe_query_ids": used,
        "repeats": repeats,
        "smoothing": smoothing,
        "seed": seed,
        "inner_calls": int(counts.sum()),
    }
    return StellaArtifact(
        transition_matrix=tuple(tuple(r) for r in matrix.tolist()),
        counts=tuple(tuple(int(v) for v in r) for r in counts.tolist()),
        provenance=provenance,
    )


def resolve_artifact(params: StellaParams, preset: RerankerPreset) -> Path:
    """The artifact path: beside the preset first, then as given (working directory)."""
    path = Path(params.artifact)
    if not path.is_absolute() and preset.source:
        beside = Path(preset.source).parent / path
        if beside.is_file():
            return beside
    if not path.is_file():
        raise HarnessError(
            f"{preset.where}: STELLA calibration file {params.artifact!r} not found; make it "
            "with `harness stella-calibrate`"
        )
    return path


@dataclass
class _State:
    """One outer order's posterior over candidates and its update records."""

    shown: np.ndarray
    prior: np.ndarray
    tally: InnerTally
    records: list[tuple[float, int, tuple[int, ...]]] = dataclasses.field(default_factory=list)
    raw_first: tuple[int, ...] = ()
    previous: float | None = None
    stable: int = 0
    active: bool = True


class Stella(MetaReranker):
    """Bayesian position calibration over reshuffled inner calls. Params: :class:`StellaParams`.

    Built by the registry with the artifact path already resolved (``artifact_path``)."""

    method = "stella"
    params_type = StellaParams
    params: StellaParams

    def __init__(
        self,
        name: str,
        context: RunContext,
        inner: Reranker,
        inner_preset: RerankerPreset,
        params: MetaParams,
        artifact: StellaArtifact | None = None,
        where: str = "",
    ) -> None:
        super().__init__(name, context, inner, inner_preset, params)
        if artifact is None:
            artifact = StellaArtifact.load(Path(self.params.artifact))
        self.artifact = artifact
        self.where = where or f"reranker {name!r}"
        expected = bound_provenance(inner_preset, inner, artifact.size)
        check_bound(artifact, expected, self.where)
        self.matrix = artifact.matrix
        self.probe = frozenset(artifact.provenance.get("probe_query_ids") or ())

    @classmethod
    def preset_extras(cls, preset: RerankerPreset, params: MetaParams) -> dict[str, Any]:
        assert isinstance(params, StellaParams)
        path = resolve_artifact(params, preset)
        return {"artifact": StellaArtifact.load(path), "where": preset.where}

    def identity(self) -> dict[str, Any]:
        provenance = self.artifact.provenance
        matrix = json.dumps(self.artifact.to_dict()["transition_matrix"]).encode()
        return {
            **super().identity(),
            "calibration": {
                "matrix_sha256": hashlib.sha256(matrix).hexdigest(),
                **{k: provenance.get(k) for k in CALIBRATION_FACTS},
            },
        }

    def position_permutations(self, candidate_set: CandidateSet) -> np.ndarray:
        rng = content_rng(self.method, self.params.seed, candidate_set)
        n = len(candidate_set)
        return np.array(
            [np.arange(n)] + [rng.permutation(n) for _ in range(self.params.max_updates - 1)]
        )

    def _rerank_batch(self, candidate_set: CandidateSet, orders: np.ndarray) -> list[RerankOutput]:
        started = time.perf_counter()
        n = len(candidate_set)
        if n != self.artifact.size:
            raise HarnessError(
                f"{self.where}: the STELLA calibration is for {self.artifact.size} candidates, "
                f"query {candidate_set.query_id!r} has {n}; recalibrate or set --depth"
            )
        if candidate_set.query_id in self.probe:
            raise HarnessError(
                f"{self.where}: query {candidate_set.query_id!r} was a STELLA probe query; "
                "evaluate on queries held out from calibration"
            )
        permutations = self.position_permutations(candidate_set)
        index = {d: i for i, d in enumerate(candidate_set.doc_ids)}
        states = [_State(row.copy(), np.full(n, 1.0 / n), InnerTally()) for row in orders]
        for update, permutation in enumerate(permutations):
            active = [s for s in states if s.active]
            if not active:
                break
            currents = [s.shown[permutation] for s in active]
            outputs = self.inner_outputs(candidate_set, currents)
            for state, current, output in zip(active, currents, outputs, strict=True):
                raw = [index[d] for d in output.ranking]
                self._update(state, current, raw, update, output)
        ids = candidate_set.doc_ids
        call_ms = (time.perf_counter() - started) * 1000.0
        results = []
        for state in states:
            entropy, update, order = min(state.records, key=lambda r: (r[0], r[1]))
            gain = math.log(n) - entropy if n > 1 else 0.0
            fallback = gain <= self.params.minimum_gain
            ranking = state.raw_first if fallback else order
            extra = {
                "method": self.method,
                "updates": len(state.records),
                "selected_update": update,
                "selected_entropy": entropy,
                "information_gain": gain,
                "fallback_to_raw": fallback,
            }
            results.append(
                RerankOutput(
                    ranking=tuple(ids[i] for i in ranking),
                    facts=state.tally.facts(call_ms, len(orders), extra),
                    scores=None if fallback else {ids[i]: float(state.prior[i]) for i in range(n)},
                )
            )
        return results

    def _update(
        self, state: _State, current: np.ndarray, raw: Sequence[int], update: int, output: Any
    ) -> None:
        state.tally.add(output.facts)
        if update == 0:
            state.raw_first = tuple(raw)
        predicted = int(np.flatnonzero(current == raw[0])[0])
        posterior = state.prior[current] * self.matrix[:, predicted]
        total = posterior.sum()
        if total > 0 and np.isfinite(total):
            state.prior[current] = posterior / total
        else:
            state.prior[:] = 1.0 / len(state.prior)
        p = state.prior[state.prior > 0]
        entropy = float(-(p * np.log(p)).sum())
        rank = {item: r for r, item in enumerate(raw)}
        order = tuple(sorted(range(len(raw)), key=lambda i: (-state.prior[i], rank[i], i)))
        state.records.append((entropy, update, order))
        if state.previous is not None and abs(state.previous - entropy) <= self.params.tolerance:
            state.stable += 1
        else:
            state.stable = 0
        state.previous = entropy
        if state.stable >= self.params.convergence_steps:
            state.active = False
