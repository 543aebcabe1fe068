"""Turn a run's samples into per-query metric vectors and a summary with bootstrap intervals.

Which orders count: the strategy's own orders (its *design*). The identity order that
``random``, ``reversed``, ``fixed`` and ``templates`` add as a reference (label
``reference``) is not part of their design, so it is left out of the means, spreads and
position bias — it would pull them towards the first stage. Only stability uses it, and only
when the design has a single order (``reversed``, ``--perms 1``), which it is then compared
against. The identity reruns of ``--repeats`` (label ``repeat``) are never part of the
design: with order 0 they form the *noise floor* group, against which every stability metric of
``registry.with_floor()`` is tested (section ``noise_floor``, see ``harness.results.noise_floor``).

Invalid orders (an answer behind them stayed invalid after every retry, see
:mod:`harness.validity`) are counted, never read: every value below is over the valid
orders, ``invalid_share`` is a query's invalid orders / its orders, and its summary value is
invalid orders / orders over the run (exact, pooled). A query without a valid order has
every metric undefined (reason recorded) but its first-stage nDCG.

Definitions, per query over the design orders:

* ``ndcg@10``, ``mrr@10``: mean of each output's value (ranx; MRR counts grades >= the
  run's relevance level as relevant, nDCG's gain is the grade); ``ndcg@10_std`` /
  ``ndcg@10_range``: their spread (undefined with one design order);
  ``ndcg@10_reference``: the identity order's value.
* ``kendall_tau``, ``rbo@10``, ``top1_agreement``, ``top10_jaccard``, ``spearman``,
  ``top10_set_agreement``: mean over all pairs.
* ``ppi``, ``gpi``: preference consistency (``harness.metrics.preference``) over the same
  orders as the pairwise metrics.
* ``best_relevant_rank_mean`` / ``_var``: the 1-based rank of the best-placed relevant
  candidate (grade >= the relevance level), mean and (population) variance over the orders.
* ``tie_rate``: share of adjacent output ranks with exactly equal scores, mean over orders
  (NaN when the reranker gives no scores); ``parse_repair_rate``: share of orders whose
  generated output needed a repair (status other than ``ok``; NaN for non-generative ones).
* ``ndcg@10_first_stage``: nDCG@10 of the first-stage ranking itself (the candidates in
  their loaded order, not reranked), so "did reranking help?" needs no second run.
* ``copy_tau``: Kendall tau between each output and the order it was shown in, mean over
  the design orders: 1 = the output copies the shown order, about 0 = it ignores it (an
  order-invariant reranker on random shuffles), -1 = it reverses it.
* ``position_bias_mad``: mean absolute deviation of the top-10 exposure of each input
  position from the no-bias share 10/n. The summary value pools every query's outputs
  before taking the deviation (per-query values are noisier and biased upwards).
* ``latency_ms``: per-order latency (call wall time / orders in the call), every order
  counted; the summary gives its p50 and p95.
* ``forward_passes``: mean model forward passes per order, every order counted (a
  meta-reranker's orders sum their inner calls).

Undefined is never a number: a metric the design cannot measure is NaN, and the reason is
counted per metric in the ``undefined`` section ({metric: {reason: queries}}):
``position_bias_mad``, ``top10_jaccard`` and ``top10_set_agreement`` for a query of at most
10 candidates (every candidate is always in the top 10: they would read 0 bias and perfect
agreement); ``ndcg@10_std``, ``ndcg@10_range`` and ``best_relevant_rank_var`` with one design
order (nothing can spread); the pairwise stability metrics, PPI, GPI and
``distinct_rankings`` with one order shown (no pair of outputs); and for a query of one
candidate, every order metric (the pairwise ones, ``copy_tau``, PPI, GPI,
``distinct_rankings``, the spreads): one item has no order to change (Kendall tau is 0/0
there, never 1). Such queries are left out of the pooled position bias, which is undefined
when no query is longer than 10.

Summary means carry a percentile bootstrap 95% interval over queries, seeded by the run seed.
Which metrics exist, their order, how each is summarised, when each is undefined and its
per-query kernel (over the query's :class:`~harness.metrics.orders.QueryOrders`) are declared
in ``harness.metrics.registry`` (k = ``TOP_K``); a run may add its own (``metrics``).
"""

from __future__ import annotations

from array import array
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from harness.data.compact import set_query_ids, set_ranked_ids, take_sets
from harness.data.model import CandidateSet, Qrels
from harness.errors import HarnessError
from harness.metrics import registry
from harness.metrics.bootstrap import bootstrap_mean_ci
from harness.metrics.effectiveness import effectiveness
from harness.metrics.orders import QueryOrders
from harness.metrics.position_bias import (
    ExposurePool,
    exposure_counts,
    no_bias_mad,
    position_bias_mad,
    rank_given_position_counts,
)
from harness.metrics.registry import (
    INVALID_SHARE,
    LATENCY_PERCENTILES,
    NDCG,
    POSITION_BIAS_MAD,
    TOP_K,
    UNDEFINED_REASONS,
    MetricRegistry,
    latency_percentile,
)
from harness.results.noise_floor import floor_section, query_floor
from harness.results.schema import RANK_COUNTS
from harness.results.store import InMemorySamples, Sample, SampleIndex
from harness.results.tables import PerOrderTable, PerQueryTable
from harness.usage import Usage

SampleSource = SampleIndex | InMemorySamples


QUERIES_PER_CHUNK = 256
"""Queries whose samples are read and scored together: memory holds one chunk's samples."""


def summarize(
    sets: Sequence[CandidateSet],
    qrels: Qrels,
    samples: Mapping[tuple[str, int], Sample] | SampleSource,
    *,
    seed: int,
    relevance_level: int = registry.DEFAULT_RELEVANCE_LEVEL,
    metrics: MetricRegistry = registry.BUILTIN,
) -> dict[str, Any]:
    """Compute ``summary``, ``per_query``, ``position_bias``, ``parse_status``, ``per_order``
    (every order's ``registry.per_order()`` values, the reference included, by order index)
    and ``counts``; metric names, order and aggregation come from ``harness.metrics.registry``.
    When the samples hold identity repeats (``--repeats``), also ``noise_floor``; when a
    metric is undefined by the design for some query, ``undefined`` (why, and for how many).
    Binary metrics count a candidate as relevant from grade ``relevance_level``. ``metrics``:
    the built-ins and the run's own (each per-query value is its spec's kernel).

    ``samples`` is read one chunk of queries at a time (a :class:`SampleIndex` reads them from
    disk), so memory holds one chunk's samples, not the run's; pooled values are accumulated
    in the queries' order, so they do not depend on the chunking.
    """
    source = InMemorySamples(samples) if isinstance(samples, Mapping) else samples
    # by position: a compact dataset's sets are built only a chunk at a time below
    sets = take_sets(sets, [k for k, q in enumerate(set_query_ids(sets)) if source.has_query(q)])
    if not sets:
        raise ValueError("no samples to summarise")
    _check_kernels(metrics)
    metric_names = [spec.name for spec in metrics.per_order()]

    per_query = PerQueryTable()
    per_order = PerOrderTable()
    floors = PerQueryTable()
    pooled = _Pooled(sets)
    undefined: dict[str, Counter[str]] = defaultdict(Counter)
    for start in range(0, len(sets), QUERIES_PER_CHUNK):
        chunk = []  # every query's valid samples; its invalid ones are only counted
        invalid_shares = []
        for cset in sets[start : start + QUERIES_PER_CHUNK]:
            valid, invalid = _split_invalid(source.query_samples(cset.query_id))
            pooled.add_invalid(invalid)
            chunk.append((cset, valid))
            invalid_shares.append(len(invalid) / (len(invalid) + len(valid)))
        flat = [(cset.query_id, s.ranking) for cset, samples_ in chunk for s in samples_]
        scores = effectiveness(qrels, flat, metric_names, relevance_level=relevance_level)
        first_stage = effectiveness(qrels, [(c.query_id, c.doc_ids) for c, _ in chunk], [NDCG])
        cursor = 0
        for position, (cset, query_samples) in enumerate(chunk):
            rows = slice(cursor, cursor + len(query_samples))
            cursor += len(query_samples)
            grades = qrels.get(cset.query_id, {})
            facts: dict[str, Any] = {
                "first_stage_ndcg": float(first_stage[NDCG][position]),
                "invalid_share": invalid_shares[position],
            }
            if not query_samples:  # every order invalid: nothing to measure
                none = QueryOrders.build(cset.doc_ids, [], {}, grades, relevance_level, **facts)
                values, reasons = _all_invalid_values(none, metrics)
                per_query.append(cset.query_id, values)
                for metric, reason in reasons.items():
                    undefined[metric][reason] += 1
                continue
            query_scores = {metric: values[rows] for metric, values in scores.items()}
            design = np.array([s.label.in_design for s in query_samples])
            chosen = [s for s, d in zip(query_samples, design, strict=True) if d]
            exposure = pooled.add(cset, query_samples, chosen)
            per_order.append(
                cset.query_id,
                [s.order_index for s in query_samples],
                {metric: row.tolist() for metric, row in query_scores.items()},
            )
            orders = QueryOrders.build(
                cset.doc_ids, query_samples, query_scores, grades, relevance_level,
                exposure=exposure, **facts,
            )  # fmt: skip
            values, reasons = _query_values(orders, metrics)
            per_query.append(cset.query_id, values)
            for metric, reason in reasons.items():
                undefined[metric][reason] += 1
            floor = query_floor(orders, values, metrics)
            if floor is not None:
                floors.append(cset.query_id, floor)

    random_design = all(label.family == "random" for label in pooled.design_labels)
    position_bias = _pooled_position_bias(pooled.exposures, random_design)
    computed = {
        POSITION_BIAS_MAD: position_bias.pop("summary"),
        **{
            latency_percentile(pct): {"value": float(np.nanpercentile(pooled.latencies, pct))}
            for pct in LATENCY_PERCENTILES
        },
        # exactly invalid orders / orders (every shown order and identity rerun counted)
        INVALID_SHARE: {"value": pooled.invalid / len(pooled.latencies)},
    }
    summary = {
        spec.name: _summary_entry(spec, per_query, computed, seed) for spec in metrics.summarized()
    }
    sections: dict[str, Any] = {
        "summary": summary,
        "per_query": per_query,
        "position_bias": position_bias | pooled.rank_matrix(),
        "parse_status": pooled.parse_status_rates(),
        "per_order": per_order,
        "counts": {
            "queries": len(sets),
            "samples": len(pooled.latencies),
            **pooled.costs.counts(),
            **({"invalid_orders": pooled.invalid} if pooled.invalid else {}),
        },
    }
    if floors:
        sections["noise_floor"] = floor_section(floors, pooled.repeats, seed, metrics)
    if metrics.added:  # what the run added, so readers need not import it again
        sections["metrics"] = [spec.to_dict() for spec in metrics.added]
    if undefined:
        sections["undefined"] = {
            spec.name: dict(undefined[spec.name])
            for spec in metrics.per_query()
            if spec.name in undefined
        }
    return sections


class _Pooled:
    """What the summary pools over every query, accumulated one query at a time: top-k
    exposure by input position, the rank-given-position counts, latencies, costs, parse
    statuses, the design's labels and the number of identity repeats."""

    def __init__(self, sets: Sequence[CandidateSet]) -> None:
        lengths = Counter(len(doc_ids) for _, doc_ids in set_ranked_ids(sets))
        self.matrix_n, self.matrix_queries = lengths.most_common(1)[0]
        self.matrix = np.zeros((self.matrix_n, self.matrix_n), dtype=np.int64)
        self.exposures = ExposurePool(TOP_K)
        self.latencies = array("d")
        self.costs = CostCounter()
        self.statuses: dict[str, Counter[str]] = defaultdict(Counter)
        self.design_labels: set[Any] = set()
        self.repeats = 0
        self.invalid = 0  # samples whose answer was invalid, over every query

    def add_invalid(self, invalid: Sequence[Sample]) -> None:
        """Count one query's invalid samples: what they cost and took is counted, their
        rankings are not."""
        self.invalid += len(invalid)
        self.latencies.extend(float(s.facts.get("latency_ms", np.nan)) for s in invalid)
        self.costs.add(invalid)

    def add(
        self, cset: CandidateSet, samples: Sequence[Sample], chosen: list[Sample]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pool one query (all its samples, and the design's); returns its exposure."""
        shown, output = _index_arrays(cset, chosen)
        exposure = exposure_counts(shown, output, k=TOP_K)
        if len(cset) > TOP_K:  # a shorter list puts every candidate in the top k: no signal
            self.exposures.add(exposure)
        if len(cset) == self.matrix_n:
            self.matrix += rank_given_position_counts(shown, output)
        self.design_labels.update(s.label for s in chosen)
        self.latencies.extend(float(s.facts.get("latency_ms", np.nan)) for s in samples)
        self.costs.add(samples)
        for sample in samples:
            status = sample.facts.get("parse_status", "not_applicable")
            if status != "not_applicable":
                self.statuses[sample.label.family][status] += 1
            if sample.label.is_repeat:
                self.repeats = max(self.repeats, sample.label.index or 0)
        return exposure

    def rank_matrix(self) -> dict[str, Any]:
        """Counts of (input position, output rank), pooled over the queries of the most common
        length: integers, exact and a fraction of the size of the probabilities they give
        (``RunResults.rank_given_position``)."""
        return {
            RANK_COUNTS: self.matrix.tolist(),
            "rank_given_position_n": self.matrix_n,
            "rank_given_position_queries": self.matrix_queries,
        }

    def parse_status_rates(self) -> dict[str, dict[str, float]]:
        """Share of each parse status per permutation family (e.g. 'random', 'identity')."""
        return {
            family: {status: c / sum(counter.values()) for status, c in sorted(counter.items())}
            for family, counter in sorted(self.statuses.items())
        }


class CostCounter:
    """What the run's samples cost: prompt and generated tokens (counted with the method's
    tokenizer), and for a remote backend the requests behind them, how many the on-disk
    cache answered, and the server's own token counts; summed as samples are added."""

    def __init__(self) -> None:
        self.usage = Usage()

    def add(self, samples: Sequence[Sample]) -> None:
        # Every reranker counts a call's work once (a set scored once for all its orders,
        # pointwise, reports it on the call's first order), so the sum is the run's cost.
        for sample in samples:
            self.usage += sample.usage

    def counts(self) -> dict[str, int]:
        usage, http = self.usage, self.usage.http
        if not http.requests and not usage.prompt_tokens and not usage.generated_tokens:
            return {}  # a control that runs no model: nothing to count
        counts = {"prompt_tokens": usage.prompt_tokens, "generated_tokens": usage.generated_tokens}
        if http.requests:
            counts |= {
                "requests": http.requests,
                "requests_cached": http.cached,
                "server_prompt_tokens": http.prompt_tokens,
                "server_completion_tokens": http.completion_tokens,
            }
        return counts


def _query_values(
    orders: QueryOrders, metrics: MetricRegistry
) -> tuple[dict[str, float], dict[str, str]]:
    """One query's values of ``metrics.per_query()``, in registry order, each its spec's
    kernel on ``orders``, and why those the design cannot measure are NaN (``{metric:
    reason}``; their kernels are not called)."""
    reasons = undefined_by_design(
        len(orders.doc_ids), len(orders.design), len(orders.compared), metrics
    )
    values = {
        spec.name: float("nan") if spec.name in reasons else _value(spec, orders)
        for spec in metrics.per_query()
    }
    return values, reasons


def _value(spec: registry.MetricSpec, orders: QueryOrders) -> float:
    """The kernel's value, checked to be a number (a user's kernel may return anything)."""
    value = spec.kernel(orders)  # type: ignore[misc]  # checked by _check_kernels
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HarnessError(
            f"metric {spec.name!r}: its kernel returned {value!r}, not a number "
            "(return NaN where the query has no value)"
        )
    return value


def _check_kernels(metrics: MetricRegistry) -> None:
    """Every per-query metric needs its kernel (a spec read back from results has none)."""
    missing = [spec.name for spec in metrics.per_query() if spec.kernel is None]
    if missing:
        raise HarnessError(
            f"metrics without a kernel cannot be computed: {', '.join(missing)} "
            "(pass the module that defines them with --metrics-module)"
        )


def _split_invalid(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """A query's samples with valid answers, and those whose answer stayed invalid (their
    rankings are the method's fallback, so no metric reads them: :mod:`harness.validity`)."""
    valid = [s for s in samples if not s.invalid]
    return valid, [s for s in samples if s.invalid] if len(valid) < len(samples) else []


def _all_invalid_values(
    orders: QueryOrders, metrics: MetricRegistry
) -> tuple[dict[str, float], dict[str, str]]:
    """The values of a query none of whose orders got a valid answer (``orders`` has no
    sample): those of the metrics defined ``without_valid_orders`` (its size, invalid share
    1, first-stage nDCG); every other metric undefined, with why where it has a direction."""
    values: dict[str, float] = {}
    reasons: dict[str, str] = {}
    for spec in metrics.per_query():
        if spec.without_valid_orders:
            values[spec.name] = _value(spec, orders)
            continue
        values[spec.name] = float("nan")
        if spec.has_direction:
            reasons[spec.name] = registry.UNDEFINED_ALL_INVALID
    return values, reasons


def undefined_by_design(
    candidates: int,
    design_orders: int,
    compared: int,
    metrics: MetricRegistry = registry.BUILTIN,
) -> dict[str, str]:
    """``{metric: reason}`` for every per-query value a query's design cannot measure, where a
    kernel would otherwise return a number that reads as a finding (0 bias, perfect
    agreement, no spread): ``candidates`` in the set, ``design_orders`` in the design,
    ``compared`` outputs the pairwise metrics compare. Each metric declares its conditions
    (``MetricSpec.undefined_when``); of those that hold, the first in
    ``registry.UNDEFINED_REASONS`` is the reason."""
    holds = {
        "one candidate": candidates < 2,  # every order shows the same one-item list
        "one design order": design_orders < 2,  # the spread of one value is 0
        "no pair": compared < 2,  # one ranking is 1 distinct one, agrees with itself
        "short list": candidates <= TOP_K,  # every candidate is in the top k of every output
    }
    reasons: dict[str, str] = {}
    for spec in metrics.per_query():
        for condition, reason in UNDEFINED_REASONS.items():
            if condition in spec.undefined_when and holds[condition]:
                reasons[spec.name] = reason
                break
    return reasons


def _index_arrays(cset: CandidateSet, samples: list[Sample]) -> tuple[np.ndarray, np.ndarray]:
    """Shown orders and outputs as candidate-index arrays [P, n]."""
    index = {doc_id: i for i, doc_id in enumerate(cset.doc_ids)}
    shown = np.array([s.shown for s in samples], dtype=np.int64)
    output = np.array([[index[d] for d in s.ranking] for s in samples], dtype=np.int64)
    return shown, output


def _summary_entry(
    spec: registry.MetricSpec,
    per_query: PerQueryTable,
    computed: Mapping[str, Mapping[str, Any]],
    seed: int,
) -> dict[str, Any]:
    """A mean over queries with its bootstrap interval, or a value computed another way."""
    if spec.summary != "mean over queries":
        return {**computed[spec.name], "aggregate": spec.summary}
    vector = per_query.column(spec.name)
    mean, low, high = bootstrap_mean_ci(vector, seed=seed)
    return {
        "value": mean,
        "ci95": [low, high],
        "aggregate": spec.summary,
        "n": int(np.sum(~np.isnan(vector))),
    }


def _pooled_position_bias(exposures: ExposurePool, random_design: bool) -> dict[str, Any]:
    """Top-10 exposure per absolute input position, pooled over queries (which may differ in n).

    Under random orders even an unbiased reranker shows sampling noise; its expected MAD
    (``no_bias_floor``) is reported beside the value so a small number can be read correctly.
    """
    hits, trials, expected = exposures.pooled()
    share = np.divide(hits, trials, out=np.full(len(hits), np.nan), where=trials > 0)
    floor = no_bias_mad(trials, expected) if random_design else None
    return {
        "summary": {
            "value": position_bias_mad(hits, trials, expected),
            "ci95": None,
            "no_bias_floor": floor,
        },
        f"exposure_top{TOP_K}": share.tolist(),
        f"expected_top{TOP_K}": expected.tolist(),
        "trials": trials.astype(int).tolist(),
    }
