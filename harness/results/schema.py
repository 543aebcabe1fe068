"""Typed records for the files of a run folder, and the format version readers check.

A run folder is self-contained: reports, gates, baselines and exports need nothing but it.

* ``run.json`` (:class:`RunHeader`): what is being run — resolved configuration and its hash,
  reranker preset, dataset facts, permutation design. Written before any reranking.
* ``queries.jsonl`` (:class:`QueryRecord`, one line per query): the query text, its candidate
  doc ids in first-stage order (``Sample.shown`` indexes them) and its graded judgments.
* ``samples.jsonl`` (:class:`harness.results.store.Sample`): one reranked order per line.
* ``results.json`` (:class:`RunResults`): the header plus the reranker's identity, the
  environment, and every metric: summary, per query, per order, position bias, parse status,
  (runs with ``--repeats``) the noise floor, and (where the design leaves a metric undefined)
  why it is. Sections and settings added within format 2 are optional, so folders written
  before them still load (a run without ``config.relevance_level`` meant level 1).

``run.json`` and ``results.json`` carry ``format`` (the JSON-lines files are read only
through them); a reader refuses a newer one and sends an older one to ``harness upgrade``.
Format history: 1 (untyped, no ``queries.jsonl``, no per-order values; ``run.json`` said
``"harness_run": 1``), 2 (this one).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.metrics.registry import BUILTIN, DEFAULT_RELEVANCE_LEVEL, MetricRegistry, recorded
from harness.rerankers.preset import RerankerPreset
from harness.results.tables import (
    PerOrder,
    PerOrderTable,
    PerQueryTable,
    RenderedRows,
    number,
)

FORMAT_VERSION = 2
LEGACY_FORMAT_KEY = "harness_run"  # format 1 stored its version under this key
RANK_COUNTS = "rank_given_position_counts"  # position_bias: (input position, output rank) counts
LEGACY_RANK_PROBABILITIES = "rank_given_position"  # what runs stored before the counts
FLOOR_METHOD = "paired"  # noise_floor.method: the floor's verdict is a paired test over queries


def format_of(data: Mapping[str, Any]) -> int | None:
    """The format version a run file declares (``None`` when it declares none)."""
    version = data.get("format", data.get(LEGACY_FORMAT_KEY))
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def check_format(data: Mapping[str, Any], where: str) -> None:
    """Refuse a run file this version of harness cannot read, in one line saying what to do."""
    version = format_of(data)
    if version == FORMAT_VERSION:
        return
    if version is None:
        raise HarnessError(f"{where}: not a harness run file (no format version)")
    if version > FORMAT_VERSION:
        raise HarnessError(
            f"{where}: written in run format {version} by a newer harness; this one reads "
            f"format {FORMAT_VERSION} (upgrade harness-rerank)"
        )
    raise HarnessError(
        f"{where}: written in run format {version}; run `harness upgrade {Path(where).parent}` "
        f"to bring it to format {FORMAT_VERSION} (it needs the run's dataset once)"
    )


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    """``cls(**data)`` for a flat record, naming missing or unknown keys in one line."""
    if not isinstance(data, Mapping):
        raise HarnessError(f"{where}: {cls.__name__} must be a JSON object, got {data!r:.40}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise HarnessError(f"{where}: unknown {cls.__name__} keys {unknown}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise HarnessError(f"{where}: malformed {cls.__name__} ({exc})") from exc


@dataclass(frozen=True)
class DatasetRecord:
    """Which data the run used: the card, its content fingerprint and the query selection."""

    name: str
    task: str
    source: str
    fingerprint: str
    queries_available: int
    queries_used: int
    query_ids: tuple[str, ...]
    notes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PermutationRecord:
    """The permutation design: strategy, random orders, seed and how seeds were derived."""

    strategy: str
    random_orders: int
    seed: int
    seeding: str
    total_orders: int


@dataclass(frozen=True)
class RunHeader:
    """``run.json``: everything fixed before reranking starts; resume checks ``config_hash``."""

    config_hash: str
    config: Mapping[str, Any]
    reranker: RerankerPreset
    dataset: DatasetRecord
    permutations: PermutationRecord
    created: str
    run_notes: tuple[str, ...] = ()
    format: int = FORMAT_VERSION

    @property
    def depth(self) -> int | None:
        return self.config.get("depth")

    @property
    def relevance_level(self) -> int:
        """The grade from which binary metrics (MRR, the best relevant item's rank) count a
        candidate as relevant: ``config.relevance_level``, recorded when it is not 1; runs
        written before it existed meant 1."""
        level = self.config.get("relevance_level", DEFAULT_RELEVANCE_LEVEL)
        if isinstance(level, bool) or not isinstance(level, int) or level < 1:
            raise HarnessError(f"config.relevance_level must be an integer >= 1, got {level!r}")
        return level

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data |= {
            "reranker": self.reranker.to_dict(),
            "dataset": asdict(self.dataset),
            "permutations": asdict(self.permutations),
        }
        return json_ready(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "run.json") -> RunHeader:
        check_format(data, where)
        own = {f.name for f in fields(cls)}
        return cls(**_header_fields({k: v for k, v in data.items() if k in own}, where))


def _header_fields(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    sections = ("config_hash", "config", "reranker", "dataset", "permutations")
    missing = [k for k in sections if k not in data]
    if missing:
        raise HarnessError(f"{where}: not a harness run file (missing {missing})")
    for key in sections[1:]:
        if not isinstance(data[key], Mapping):
            raise HarnessError(f"{where}: '{key}' must be a JSON object")
    dataset = dict(data["dataset"])
    dataset["query_ids"] = tuple(dataset.get("query_ids", ()))
    return {
        **data,
        "config": dict(data["config"]),
        "reranker": _build(RerankerPreset, data["reranker"], where),
        "dataset": _build(DatasetRecord, dataset, where),
        "permutations": _build(PermutationRecord, data["permutations"], where),
        "run_notes": tuple(data.get("run_notes", ())),
    }


@dataclass(frozen=True)
class QueryRecord:
    """One line of ``queries.jsonl``: what a query's samples and metrics refer to."""

    query_id: str
    text: str  # the query text, or "user <id>" for a recommendation profile
    doc_ids: tuple[str, ...]  # candidates in first-stage order: Sample.shown indexes these
    qrels: Mapping[str, int]  # every judgment of the query (the ideal DCG needs them all)

    def to_dict(self) -> dict[str, Any]:
        return {
            "query_id": self.query_id,
            "text": self.text,
            "doc_ids": list(self.doc_ids),
            "qrels": dict(self.qrels),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueryRecord:
        return cls(
            query_id=str(data["query_id"]),
            text=str(data["text"]),
            doc_ids=tuple(str(d) for d in data["doc_ids"]),
            qrels={str(d): int(g) for d, g in data["qrels"].items()},
        )


@dataclass(frozen=True)
class SummaryEntry:
    """One summary number: its value, how it aggregates queries, and its 95% interval."""

    value: float
    aggregate: str
    ci95: tuple[float, float] | None = None
    n: int | None = None
    no_bias_floor: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Only the fields this entry has (a pooled entry has no ``n``, a mean no floor)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> SummaryEntry:
        entry = dict(data)
        entry["value"] = number(entry.get("value"))
        if entry.get("ci95") is not None:
            low, high = entry["ci95"]
            entry["ci95"] = (number(low), number(high))
        return _build(cls, entry, where)


@dataclass(frozen=True)
class RunResults:
    """``results.json``: the header, the reranker's identity and environment, every metric."""

    header: RunHeader
    environment: Mapping[str, Any]
    wall_time_s: float
    finished: str
    summary: Mapping[str, SummaryEntry]
    per_query: Mapping[str, Mapping[str, float]]
    per_order: Mapping[str, PerOrder]
    position_bias: Mapping[str, Any]
    parse_status: Mapping[str, Mapping[str, float]]
    counts: Mapping[str, int]
    # ``--repeats`` only: {"repeats", "method", "alpha", "exact", "matched_orders", "summary":
    # {metric: {value, ci95, n, design, excess, excess_ci95, n_paired, p, p_holm,
    # within_floor}}, "per_query"} (``harness.results.noise_floor``; sections written before
    # the paired test have no "method" and only value, ci95, n, within_floor); empty for runs
    # without repeats (and every run written before them).
    noise_floor: Mapping[str, Any] = field(default_factory=dict)
    # {metric: {reason: queries}}: values the design cannot measure (NaN), and why; empty when
    # every metric is defined (and for every run written before undefined values were named).
    undefined: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # The built-in metrics and those the run added (``--metrics-module``): results record the
    # added ones' specs (section ``metrics``, no kernels), so reports and gates show and gate
    # them without the module; runs written before (or adding none) have the built-ins.
    metrics: MetricRegistry = BUILTIN

    # Shorthands for the header parts every reader needs.
    @property
    def reranker(self) -> RerankerPreset:
        return self.header.reranker

    @property
    def dataset(self) -> DatasetRecord:
        return self.header.dataset

    @property
    def permutations(self) -> PermutationRecord:
        return self.header.permutations

    @property
    def config(self) -> Mapping[str, Any]:
        return self.header.config

    @property
    def query_ids(self) -> tuple[str, ...]:
        return tuple(self.per_query)

    @property
    def relevance_level(self) -> int:
        return self.header.relevance_level

    def label(self, metric: str) -> str:
        """The metric's name as outputs show it: ``mrr@10 (rel ≥ 2)`` for a binary one."""
        return self.metrics.label(metric, self.relevance_level)

    def undefined_text(self, metric: str) -> str | None:
        """Why ``metric`` is undefined: ``undefined (reason)`` when it is for every query,
        ``undefined for 2 of 43 queries (reason)`` for some; None when it is always defined."""
        return undefined_text(self.undefined.get(metric), len(self.per_query))

    def vector(self, metric: str) -> dict[str, float]:
        """``{query id: value}`` of a per-query metric (NaN where a query lacks it)."""
        if isinstance(self.per_query, PerQueryTable):
            return dict(zip(self.per_query, self.per_query.column(metric).tolist(), strict=True))
        return {q: float(v.get(metric, math.nan)) for q, v in self.per_query.items()}

    def floor(self, metric: str) -> Mapping[str, Any] | None:
        """The noise-floor entry of ``metric`` (``value``, ``ci95``, ``n`` and, for stability
        metrics, the paired test: ``design``, ``excess``, ``p_holm``, ``within_floor``...),
        or None when the run has no ``--repeats``."""
        if not self.noise_floor:
            return None
        return self.noise_floor.get("summary", {}).get(metric)

    @property
    def floor_tested(self) -> bool:
        """Whether the noise floor carries the paired test's verdicts; a floor written before
        it compared two point estimates, and its verdicts are not shown."""
        return self.noise_floor.get("method") == FLOOR_METHOD

    def rank_given_position(self) -> Any:
        """P(output rank | input position) as an [n, n] NumPy array, or None when the run has
        none: from the counts (``position_bias.rank_given_position_counts``), or from the
        probabilities that runs written before the counts stored (``rank_given_position``)."""
        import numpy as np

        from harness.metrics.position_bias import rank_given_position

        counts = self.position_bias.get(RANK_COUNTS)
        if counts:
            return rank_given_position(np.asarray(counts))
        legacy = self.position_bias.get(LEGACY_RANK_PROBABILITIES)
        return np.asarray(legacy, dtype=np.float64) if legacy else None

    def summary_value(self, metric: str) -> float:
        entry = self.summary.get(metric)
        return math.nan if entry is None else entry.value

    def to_dict(self) -> dict[str, Any]:
        """``results.json`` as plain JSON values (NaN as null)."""
        return self._layout(lambda rows, render: {k: render(v) for k, v in rows.items()})

    def to_streamed_dict(self) -> dict[str, Any]:
        """:meth:`to_dict`'s content with ``per_query``, ``per_order`` and the noise floor's
        ``per_query`` rendered a row at a time as ``iter_json`` writes them: writing a large
        run's results never holds those sections as plain JSON."""
        return self._layout(RenderedRows)

    def _layout(self, rows: Callable[[Mapping[str, Any], Callable[[Any], Any]], Any]) -> dict:
        """The file's sections in order; ``rows(section, render)`` gives a per-query section."""
        body = json_ready(
            {
                "environment": self.environment,
                "wall_time_s": self.wall_time_s,
                "finished": self.finished,
                "summary": {k: v.to_dict() for k, v in self.summary.items()},
                "per_query": None,
                "per_order": None,
                "position_bias": self.position_bias,
                "parse_status": self.parse_status,
                "counts": self.counts,
            }
        )
        body["per_query"] = rows(self.per_query, json_ready)
        body["per_order"] = rows(self.per_order, lambda orders: json_ready(orders.to_dict()))
        if self.noise_floor:
            floor = {k: v for k, v in self.noise_floor.items() if k != "per_query"}
            body["noise_floor"] = json_ready(floor) | {
                "per_query": rows(self.noise_floor["per_query"], json_ready)
            }
        if self.undefined:
            body["undefined"] = json_ready(self.undefined)
        if self.metrics.added:
            body["metrics"] = json_ready([spec.to_dict() for spec in self.metrics.added])
        return self.header.to_dict() | body

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "results.json") -> RunResults:
        header = RunHeader.from_dict(data, where)
        return cls.assemble(
            header,
            data,
            environment=data.get("environment") or {},
            wall_time_s=data.get("wall_time_s"),
            finished=data.get("finished"),
            where=where,
        )

    @classmethod
    def assemble(
        cls,
        header: RunHeader,
        metrics: Mapping[str, Any],
        *,
        environment: Mapping[str, Any],
        wall_time_s: Any,
        finished: Any,
        where: str = "results",
    ) -> RunResults:
        """Typed results from a header and the metric sections (as ``summarize`` returns
        them, or as ``results.json`` stores them)."""
        try:
            return cls(
                header=header,
                environment=dict(environment),
                wall_time_s=float(wall_time_s),
                finished=str(finished),
                summary={
                    k: SummaryEntry.from_dict(v, f"{where}: summary {k!r}")
                    for k, v in metrics["summary"].items()
                },
                per_query=PerQueryTable.from_rows(metrics["per_query"]),
                per_order=PerOrderTable.from_rows(metrics["per_order"]),
                position_bias=dict(metrics["position_bias"]),
                parse_status=dict(metrics.get("parse_status") or {}),
                counts=dict(metrics["counts"]),
                noise_floor=_noise_floor(metrics.get("noise_floor")),
                undefined={
                    str(metric): {str(why): int(n) for why, n in reasons.items()}
                    for metric, reasons in (metrics.get("undefined") or {}).items()
                },
                metrics=recorded(metrics.get("metrics"), f"{where}: metrics"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise HarnessError(f"{where}: malformed results ({type(exc).__name__}: {exc})") from exc


def undefined_text(reasons: Mapping[str, int] | None, queries: int) -> str | None:
    """``undefined (why)`` when ``reasons`` ({why: queries}) cover all ``queries``, else
    ``undefined for k of n queries (why)``; None without reasons."""
    if not reasons:
        return None
    why = "; ".join(reasons)
    count = sum(reasons.values())
    if count >= queries:
        return f"undefined ({why})"
    return f"undefined for {count} of {queries} queries ({why})"


def _noise_floor(data: Any) -> dict[str, Any]:
    """The optional ``noise_floor`` section, its numbers back to floats (null is NaN). A
    section written before the paired test (no ``method``) reads as it was."""
    if not data:
        return {}
    summary = {str(name): _floor_entry(entry) for name, entry in data["summary"].items()}
    per_query = PerQueryTable.from_rows(data["per_query"])
    section = {k: v for k, v in data.items() if k not in ("summary", "per_query")}
    return section | {"repeats": int(data["repeats"]), "summary": summary, "per_query": per_query}


_FLOOR_NUMBERS = ("value", "design", "excess", "p", "p_holm")
_FLOOR_INTERVALS = ("ci95", "excess_ci95")


def _floor_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(entry)
    for key in _FLOOR_NUMBERS:
        if key in entry or key == "value":
            out[key] = number(entry.get(key))
    for key in _FLOOR_INTERVALS:
        if key in entry or key == "ci95":
            out[key] = [number(x) for x in entry.get(key) or (None, None)]
    return out


def json_ready(value: Any) -> Any:
    """Strict-JSON-ready copy: tuples to lists, NaN/inf to null, mappings to dicts."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
