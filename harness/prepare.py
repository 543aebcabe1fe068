"""Resolve a run before any model is loaded: preset, data, permutation design, identity, folder.

:func:`prepare_run` is a row of small steps, each a function of what the steps before it
resolved, so each can be read and tested alone. Loading the dataset and reading a templates
file are the only reads; nothing is written.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.backends.registry import backend_class
from harness.config import RunConfig, config_hash
from harness.data.compact import set_query_ids, set_ranked_ids
from harness.data.model import CandidateSet, Dataset, TextQuery, describe_dropped
from harness.data.query_selection import QuerySelection
from harness.data.registry import DatasetCard, load_dataset, resolve_card, select
from harness.data.trec import has_relevant
from harness.errors import HarnessError, shorten
from harness.metrics.registry import BUILTIN, MetricRegistry, load_modules
from harness.options import NOT_IDENTITY, OMITTED_AT
from harness.permutations import PermutationPlan, Pin, Template, plan_permutations, read_templates
from harness.rerankers.base import auto_batch_size
from harness.rerankers.model_override import with_model
from harness.rerankers.preset import RerankerPreset
from harness.rerankers.registry import (
    adapter_class,
    backend_of,
    check_preset,
    device_used,
    model_preset,
    resolve_preset,
)
from harness.results.provenance import utc_now
from harness.results.schema import DatasetRecord, PermutationRecord, QueryRecord, RunHeader


@dataclass(frozen=True)
class PreparedRun:
    """Everything resolved before any reranking: data, folder, provenance header, and how to
    build each query's permutation plan.

    Plans are not held: :meth:`plan` rebuilds one from its content-addressed seed when it is
    needed (the same orders every time), so memory does not grow with the number of queries.
    """

    config: RunConfig
    card: DatasetCard
    dataset: Dataset
    preset: RerankerPreset
    run_dir: Path
    header: RunHeader
    notes: tuple[str, ...]
    pin: Pin | None = None
    templates: tuple[Template, ...] = ()
    # the built-in metrics and the run's own (``--metrics-module``, or the Python API's)
    metrics: MetricRegistry = BUILTIN

    @property
    def total_orders(self) -> int:
        return self.header.permutations.total_orders

    @property
    def batch_size(self) -> int:
        """Orders per call: prepare_run records the number it chose when the config left it
        unset, so a prepared run always has one."""
        if self.config.batch_size is None:
            raise AssertionError("prepare_run did not resolve the batch size")
        return self.config.batch_size

    def plan(self, cset: CandidateSet) -> PermutationPlan:
        """The permutation plan of one of this run's candidate sets."""
        return self._plan_of(cset.query_id, cset.doc_ids)

    def plans(self) -> Iterator[PermutationPlan]:
        """Every candidate set's plan, built one at a time in the dataset's order."""
        for query_id, doc_ids in set_ranked_ids(self.dataset.sets):
            yield self._plan_of(query_id, doc_ids)

    def _plan_of(self, query_id: str, doc_ids: Sequence[str]) -> PermutationPlan:
        return _plan(
            query_id, doc_ids, self.dataset, self.config, self.pin, self.templates,
            relevance_level=self.header.relevance_level,
        )  # fmt: skip

    def query_records(self) -> Iterator[QueryRecord]:
        """What ``queries.jsonl`` holds: the run folder's own copy of the data it needs."""
        for cset in self.dataset.sets:
            query = cset.query
            yield QueryRecord(
                query_id=cset.query_id,
                text=query.text if isinstance(query, TextQuery) else f"user {query.user_id}",
                doc_ids=cset.doc_ids,
                qrels=dict(self.dataset.qrels.get(cset.query_id, {})),
            )


def prepare_run(config: RunConfig, preset: RerankerPreset | None = None) -> PreparedRun:
    """Resolve presets and data and build every permutation plan; no model is loaded yet.

    A resolved preset is checked as far as it can be without a model, so a bad one stops the
    run before its folder is written. ``preset`` replaces resolving ``config.reranker`` (an
    upgrade, which reranks nothing, passes the recorded one; a Python function, its own).
    """
    named = preset is None  # a preset by name or file, whose device is the run's to say
    metrics = load_modules(config.metrics_module)  # a bad module stops the run before any work
    if preset is None:
        preset = named_preset(config)
    card = resolve_card(config.dataset)
    full = load_dataset(card)
    chosen = choose_queries(config, card, full)
    check_sets(card, full, chosen.dataset)
    level = config.relevance_level or card.relevance_level
    notes = _level_notes(chosen.dataset, card, level) + dropped_notes(full)
    notes += preset_notes(config, preset, named) + size_notes(config, full, chosen)
    pin = Pin.parse(config.pin) if config.pin is not None else None
    templates = read_templates(Path(config.templates)) if config.templates else ()
    # Plans are rebuilt from their seeds when needed, never held for every query.
    lengths = plan_lengths(chosen.dataset, config, pin, templates, level)
    config = with_batch_size(config, preset, lengths)
    resolved = resolved_config(config, chosen, level)
    digest = identity_hash(resolved, preset, full.fingerprint)
    run_dir = Path(config.out) if config.out else _default_run_dir(config, card.name, level)
    header = RunHeader(
        config_hash=digest,
        config=resolved,
        reranker=preset,
        dataset=dataset_record(card, full, chosen.dataset),
        permutations=permutation_record(config, total_orders=sum(lengths)),
        created=utc_now(),
        run_notes=tuple(notes),
    )
    return PreparedRun(
        config, card, chosen.dataset, preset, run_dir, header, tuple(notes), pin=pin,
        templates=templates, metrics=metrics,
    )  # fmt: skip


def named_preset(config: RunConfig) -> RerankerPreset:
    """``--reranker`` resolved (``--model`` swapped in) and checked as far as it can be
    without a model."""
    preset = resolve_preset(config.reranker or "")
    if config.model:
        preset = with_model(preset, config.model)
    check_preset(preset)
    return preset


@dataclass(frozen=True)
class QueryChoice:
    """The candidate sets a run reranks, and the settings that chose them from the card's."""

    dataset: Dataset
    queries: int | None  # a count; None with a selection (ids or a sample)
    depth: int | None
    selection: QuerySelection | None


def choose_queries(config: RunConfig, card: DatasetCard, full: Dataset) -> QueryChoice:
    """``--queries`` (a count, ids or a sample) and ``--depth``, defaulting to the card's."""
    depth = config.depth if config.depth is not None else card.defaults.get("depth")
    if isinstance(config.queries, str):
        selection = QuerySelection.parse(config.queries)
        chosen = select(selection.apply(full, config.seed), queries=None, depth=depth)
        return QueryChoice(chosen, None, depth, selection)
    queries = config.queries if config.queries is not None else card.defaults.get("queries")
    return QueryChoice(select(full, queries=queries, depth=depth), queries, depth, None)


def check_sets(card: DatasetCard, full: Dataset, dataset: Dataset) -> None:
    """Refuse a run with nothing to rerank, or with a query whose nDCG would be undefined."""
    if not dataset.sets:
        dropped = describe_dropped(full.notes)
        why = f" ({dropped}; check the judgments (qrels) the card names)" if dropped else ""
        raise HarnessError(f"dataset {card.name!r} has no candidate sets to rerank{why}")
    unjudged = [q for q in set_query_ids(dataset.sets) if not has_relevant(dataset.qrels.get(q))]
    if unjudged:  # loaders drop these; a custom loader might not, and nDCG would be undefined
        raise HarnessError(
            f"dataset {card.name!r}: query {shorten(unjudged[0], quote=True)} has no relevant "
            f"judgment ({len(unjudged)} such queries); drop them or add judgments"
        )


def dropped_notes(full: Dataset) -> list[str]:
    """What the loader left out of the dataset (queries without judgments, ...)."""
    dropped = describe_dropped(full.notes)
    return [f"{len(full.sets)} queries available, {dropped}"] if dropped else []


def size_notes(config: RunConfig, full: Dataset, chosen: QueryChoice) -> list[str]:
    """Settings that asked for more than the dataset has, and a default that used less."""
    notes = []
    longest = max(len(doc_ids) for _, doc_ids in set_ranked_ids(full.sets))
    if chosen.depth is not None and chosen.depth > longest:
        notes.append(
            f"--depth {chosen.depth} exceeds the longest list ({longest}); full lists are used"
        )
    if chosen.queries is not None and chosen.queries > len(full.sets):
        notes.append(
            f"--queries {chosen.queries} exceeds the {len(full.sets)} available; all are used"
        )
    if config.queries is None and chosen.queries is not None:
        notes.append(
            f"using the first {len(chosen.dataset.sets)} of {len(full.sets)} queries "
            "(the dataset's default; pass --queries N for more)"
        )
    return notes


def preset_notes(config: RunConfig, preset: RerankerPreset, named: bool) -> list[str]:
    """Settings the reranker cannot honour: a floor it cannot see, a device it ignores."""
    notes = _floor_caveats(preset) if config.repeats else []
    return notes + (_device_caveats(preset, config.device) if named else [])


def plan_lengths(
    dataset: Dataset,
    config: RunConfig,
    pin: Pin | None,
    templates: tuple[Template, ...],
    level: int,
) -> list[int]:
    """The number of orders of each candidate set, in the dataset's order."""
    return [
        len(_plan(query_id, doc_ids, dataset, config, pin, templates, relevance_level=level))
        for query_id, doc_ids in set_ranked_ids(dataset.sets)
    ]


def with_batch_size(config: RunConfig, preset: RerankerPreset, lengths: Sequence[int]) -> RunConfig:
    """Orders per call: an unset one is recorded as the number chosen, so a resume takes it."""
    if config.batch_size is not None:
        return config
    cap = adapter_class(preset).batch_cap
    return replace(config, batch_size=auto_batch_size(cap, max(lengths, default=1)))


def resolved_config(config: RunConfig, chosen: QueryChoice, level: int) -> dict[str, Any]:
    """The configuration as the run resolved it: what ``results.json`` records and hashes."""
    resolved = config.to_dict() | {
        "queries": chosen.queries, "depth": chosen.depth, "relevance_level": level,
    }  # fmt: skip
    resolved.pop("out")
    if chosen.selection is not None:  # the ids themselves, whatever file or draw named them
        resolved["queries"] = chosen.selection.text
        resolved["query_ids_sha256"] = hashlib.sha256(
            "\n".join(set_query_ids(chosen.dataset.sets)).encode()
        ).hexdigest()
    if config.strategy != "random":
        resolved["perms"] = None  # only random uses it; it must not split the same run in two
    for key, default in OMITTED_AT.items():
        if resolved[key] == default:
            del resolved[key]  # earlier runs keep their config hash
    if config.templates:  # what was shown, not where the file was
        resolved["templates_sha256"] = hashlib.sha256(
            Path(config.templates).read_bytes()
        ).hexdigest()
    return resolved


def identity_hash(resolved: dict[str, Any], preset: RerankerPreset, fingerprint: str) -> str:
    """The configuration hash: what is computed, over which data. The templates file's
    content counts, not its path."""
    return config_hash(
        {
            "config": {k: v for k, v in resolved.items() if k not in NOT_IDENTITY},
            # where the preset was read from and where it runs (resources) are not what it computes
            "reranker": {
                k: v for k, v in preset.to_dict().items() if k not in ("source", "resources")
            },
            "dataset_fingerprint": fingerprint,
        }
    )


def dataset_record(card: DatasetCard, full: Dataset, dataset: Dataset) -> DatasetRecord:
    """The data's provenance: which dataset, which version (fingerprint), which queries."""
    return DatasetRecord(
        name=card.name,
        task=full.task,
        source=full.source,
        fingerprint=full.fingerprint,
        queries_available=len(full.sets),
        queries_used=len(dataset.sets),
        query_ids=tuple(set_query_ids(dataset.sets)),
        notes=dict(full.notes),
    )


def permutation_record(config: RunConfig, total_orders: int) -> PermutationRecord:
    """How the orders were drawn, so another implementation can reproduce them."""
    return PermutationRecord(
        strategy=config.strategy,
        random_orders=config.perms if config.strategy == "random" else 0,
        seed=config.seed,
        seeding="numpy default_rng(sha256(f'{seed}\\x1f{query_id}'))",
        total_orders=total_orders,
    )


def _level_notes(dataset: Dataset, card: DatasetCard, level: int) -> list[str]:
    """Refuse a relevance level no judgment reaches; name the queries it leaves without a
    relevant candidate (their MRR is 0, as trec_eval scores them)."""
    if level == 1:
        return []
    ids = list(set_query_ids(dataset.sets))
    short = [q for q in ids if max(dataset.qrels.get(q, {}).values(), default=0) < level]
    if len(short) == len(ids):
        top = max((g for q in ids for g in dataset.qrels.get(q, {}).values()), default=0)
        raise HarnessError(
            f"dataset {card.name!r}: no query has a judgment at relevance level {level} "
            f"(grades go up to {top}); pass a lower --relevance-level"
        )
    if not short:
        return []
    return [
        f"{len(short)} of {len(ids)} queries have no judgment at relevance level {level} "
        f"(first: {shorten(short[0], quote=True)}): their MRR@10 is 0"
    ]


def _floor_caveats(preset: RerankerPreset) -> list[str]:
    """Where ``--repeats`` cannot see jitter: the rerun is answered without recomputing."""
    computing = model_preset(preset)
    backend = backend_of(computing)
    if (
        backend is not None
        and backend_class(backend).remote
        and computing.params.get("cache", True)
    ):
        return [
            "--repeats over an HTTP backend with its request cache on: each repeat is answered "
            "from the cache, so the floor is 0 by construction (set cache: false in the preset "
            "to measure the server's own jitter)"
        ]
    if preset.adapter == "pointwise":
        return ["--repeats with pointwise: a set is scored once and reused, so its floor is 0"]
    return []


def _device_caveats(preset: RerankerPreset, device: str) -> list[str]:
    """A ``--device`` the reranker does not compute on is said, not silently ignored: the
    results record where it did compute (``none`` for a control, ``remote`` for a server)."""
    used = device_used(preset, device)
    if device == "cpu" or used == device:  # the default, or honoured
        return []
    where = "runs no model" if used == "none" else "computes on a server"
    return [
        f"--device {device} has no effect: reranker {preset.name!r} {where} "
        f"(recorded as device_used: {used})"
    ]


def _plan(
    query_id: str,
    doc_ids: Sequence[str],
    dataset: Dataset,
    config: RunConfig,
    pin: Pin | None = None,
    templates: tuple[Template, ...] = (),
    *,
    relevance_level: int = 1,
) -> PermutationPlan:
    """The plan of the set of ``query_id`` whose candidates are ``doc_ids`` (first-stage order).
    ``sweep`` and ``--pin relevant@P`` move the candidates judged at or above the run's
    ``relevance_level`` (the grade from which its binary metrics count one as relevant)."""
    judged = dataset.qrels.get(query_id, {})
    relevant = [
        i for i, doc_id in enumerate(doc_ids) if judged.get(doc_id, 0) >= relevance_level
    ]  # fmt: skip
    return plan_permutations(
        config.strategy,
        query_id,
        len(doc_ids),
        perms=config.perms,
        seed=config.seed,
        relevant_positions=relevant,
        count=config.count,
        pin=pin,
        templates=templates,
        repeats=config.repeats,
    )


def _default_run_dir(config: RunConfig, dataset_name: str, relevance_level: int = 1) -> Path:
    """Deterministic, so rerunning the same command resumes the same folder. A relevance
    level other than 1 is named (``-l2``): folders of runs from before levels keep theirs."""
    reranker = Path(config.reranker or "").stem
    parts = [reranker, dataset_name, config.strategy]
    if config.strategy == "random":
        parts.append(f"p{config.perms}")
    if config.pin is not None:
        parts.append(f"pin{config.pin}")
    if config.templates is not None:
        parts.append(Path(config.templates).stem)
    if config.count is not None:
        parts.append(f"c{config.count}")
    if config.repeats:
        parts.append(f"r{config.repeats}")
    if config.target is not None:
        parts.append(f"t{config.target}-min{config.min_perms}")
    if isinstance(config.queries, str):
        parts.append(f"q{QuerySelection.parse(config.queries).tag}")
    elif config.queries is not None:
        parts.append(f"q{config.queries}")
    if config.model:
        parts.append(
            f"m{Path(config.model).stem if config.model.endswith('.gguf') else config.model}"
        )
    if config.depth is not None:
        parts.append(f"d{config.depth}")
    if relevance_level != 1:
        parts.append(f"l{relevance_level}")
    parts.append(f"s{config.seed}")
    return Path("runs") / re.sub(r"[^A-Za-z0-9_.@-]+", "_", "-".join(parts))
