"""Baselines: a finished run reduced to per-query metric vectors plus the provenance to pair on.

A baseline keeps every query's value, not only means, so a later run can be tested *paired*
(query by query), which is far more sensitive than comparing two means. It also records what
must match for that pairing to be meaningful (dataset fingerprint, depth, relevance level,
query ids, permutation strategy, seed and count), what is being compared (reranker, model,
prompt), and which metrics the run's design left undefined, and why.
The gate reduces the new run to the same structure, so both sides are read identically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.files import dumps_json, ensure_writable_folder, read_json_object, write_text_atomic
from harness.metrics import registry
from harness.metrics.registry import DEFAULT_RELEVANCE_LEVEL
from harness.results.schema import RunResults

FORMAT_VERSION = 1
DESIGN_KEYS = ("count", "pin", "templates_sha256")
"""Settings of the order design (fixed, sweep, templates) that decide which orders were shown."""


@dataclass(frozen=True)
class Baseline:
    """Per-query metric vectors (aligned with ``query_ids``) and the run's provenance."""

    query_ids: tuple[str, ...]
    per_query: Mapping[str, tuple[float, ...]]
    reranker: Mapping[str, Any]
    dataset: Mapping[str, Any]
    permutations: Mapping[str, Any]
    config_hash: str
    source: Mapping[str, Any] = field(default_factory=dict)
    origin: str = field(default="", compare=False)  # the file or run folder, for errors
    # {metric: {reason: queries}}: values the run's design left undefined (NaN), and why
    undefined: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # invalid orders / orders (harness.validity); None where the run or baseline was recorded
    # before invalid answers were (an invalid answer then stopped the run: read as 0)
    invalid_share: float | None = None

    @property
    def order_invariant(self) -> bool:
        return bool(self.reranker.get("order_invariant"))

    @property
    def relevance_level(self) -> int:
        """The grade from which the binary metrics (``mrr@10``) counted a candidate as
        relevant; baselines recorded before levels existed meant 1."""
        level = self.dataset.get("relevance_level", DEFAULT_RELEVANCE_LEVEL)
        if isinstance(level, bool) or not isinstance(level, int) or level < 1:
            raise HarnessError(
                f"{self.origin or 'baseline'}: dataset.relevance_level must be an integer >= 1, "
                f"got {level!r}"
            )
        return level

    @property
    def model(self) -> Any:
        return (self.reranker.get("identity") or {}).get("model")

    @property
    def prompt_hash(self) -> Any:
        identity = self.reranker.get("identity") or {}
        return identity.get("prompt_sha256", identity.get("prompt_hash"))

    def vector(self, metric: str) -> dict[str, float]:
        """``{query id: value}`` of one metric; HarnessError listing the metrics it has."""
        if metric not in self.per_query:
            known = ", ".join(sorted(self.per_query))
            raise HarnessError(
                f"{self.origin or 'baseline'}: does not record metric {metric!r} per query "
                f"(it has: {known}); record it again with this harness, or gate other metrics"
            )
        return dict(zip(self.query_ids, self.per_query[metric], strict=True))

    def to_dict(self) -> dict[str, Any]:
        return {
            "harness_baseline": FORMAT_VERSION,
            "reranker": dict(self.reranker),
            "model": self.model,
            "prompt_hash": self.prompt_hash,
            "dataset": dict(self.dataset),
            "permutations": dict(self.permutations),
            "config_hash": self.config_hash,
            "source": dict(self.source),
            "query_ids": list(self.query_ids),
            # NaN (a metric undefined for a query) is stored as null: strict JSON.
            "per_query": {
                metric: [None if math.isnan(v) else v for v in values]
                for metric, values in self.per_query.items()
            },
            **({"undefined": _plain_undefined(self.undefined)} if self.undefined else {}),
            **({"invalid_share": self.invalid_share} if self.invalid_share is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "baseline") -> Baseline:
        version = data.get("harness_baseline")
        if version != FORMAT_VERSION:
            raise HarnessError(
                f"{where}: not a harness baseline of format {FORMAT_VERSION} (found {version!r}); "
                "recreate it with `harness baseline RUN_DIR --to FILE`"
            )
        try:
            query_ids = tuple(str(q) for q in data["query_ids"])
            per_query = {
                str(metric): tuple(math.nan if v is None else float(v) for v in values)
                for metric, values in data["per_query"].items()
            }
            for metric, values in per_query.items():
                if len(values) != len(query_ids):
                    raise ValueError(f"{metric} has {len(values)} values for {len(query_ids)} ids")
            return cls(
                query_ids=query_ids,
                per_query=per_query,
                reranker=dict(data["reranker"]),
                dataset=dict(data["dataset"]),
                permutations=dict(data["permutations"]),
                config_hash=str(data["config_hash"]),
                source=dict(data.get("source") or {}),
                origin=where,
                undefined=_plain_undefined(data.get("undefined") or {}),
                invalid_share=_share(data.get("invalid_share")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise HarnessError(f"{where}: malformed baseline ({exc})") from exc


def baseline_from_results(results: RunResults, run_dir: Path | str = "") -> Baseline:
    """Reduce a run's results to a :class:`Baseline`."""
    rows = results.per_query
    query_ids = results.query_ids
    # n_orders stays: the order-noise test weighs each query by its own count (adaptive runs)
    left_out = {spec.name for spec in results.metrics.descriptive()} - {registry.N_ORDERS}
    metrics = sorted({m for row in rows.values() for m in row} - left_out)
    per_query = {m: tuple(float(rows[q].get(m, math.nan)) for q in query_ids) for m in metrics}
    reranker = results.reranker
    permutations = results.permutations
    packages = results.environment.get("packages") or {}
    return Baseline(
        origin=f"run {run_dir}" if str(run_dir) else "run",
        query_ids=query_ids,
        per_query=per_query,
        reranker={
            "name": reranker.name,
            "adapter": reranker.adapter,
            "order_invariant": reranker.order_invariant,
            "params": dict(reranker.params),
            "identity": dict(reranker.identity),
        },
        dataset={
            "name": results.dataset.name,
            "fingerprint": results.dataset.fingerprint,
            "depth": results.header.depth,
            "relevance_level": results.relevance_level,
        },
        permutations={
            "strategy": permutations.strategy,
            "random_orders": permutations.random_orders,
            "seed": permutations.seed,
            "total_orders": permutations.total_orders,
            # the order design beyond strategy (absent = the default, as in older baselines)
            **{k: results.config[k] for k in DESIGN_KEYS if results.config.get(k) is not None},
        },
        config_hash=results.header.config_hash,
        source={
            "run_dir": str(run_dir),
            "finished": results.finished,
            "harness": packages.get("harness-rerank"),
            "commit": (results.environment.get("source") or {}).get("commit"),
        },
        undefined={m: reasons for m, reasons in results.undefined.items() if m in per_query},
        invalid_share=_share(results.summary_value(registry.INVALID_SHARE)),
    )


def _share(value: Any) -> float | None:
    """A recorded invalid share, None where none was recorded (NaN: a run of before)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"invalid_share must be a share between 0 and 1, got {value!r}")
    return float(value)


def _plain_undefined(data: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    return {str(m): {str(why): int(n) for why, n in reasons.items()} for m, reasons in data.items()}


def write_baseline(results: RunResults, run_dir: Path, to: Path) -> Baseline:
    """Write the baseline of a finished run to ``to`` (parents created); returns it."""
    if to.is_dir():
        raise HarnessError(f"--to {to}: is a folder, expected a baseline file path (NAME.json)")
    ensure_writable_folder(to.parent, "the baseline")
    baseline = baseline_from_results(results, run_dir)
    # each vector on one line, so a re-recorded baseline diffs readably
    write_text_atomic(to, dumps_json(baseline.to_dict(), indent=1, item_separator=", ") + "\n")
    return baseline


def read_baseline(path: Path) -> Baseline:
    """Load a baseline file; a missing or malformed file is a HarnessError naming it."""
    if not path.exists():
        raise HarnessError(f"baseline not found: {path}")
    return Baseline.from_dict(read_json_object(path, "baseline"), where=str(path))
