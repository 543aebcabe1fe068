"""Every metric a run reports, declared once: name, direction, label, aggregation and role.

Summary, ``summary.md``, the report's tables, its comparisons and the gate all read this
module, so what a metric means (is lower better? is it in the headline? is it gated by
default?) cannot drift between them. Names with a cutoff are built from ``TOP_K``.

Lookups: :func:`get` (one metric, HarnessError naming the known ones otherwise),
:func:`per_query`, :func:`per_order`, :func:`descriptive`, :func:`summarized`,
:func:`headline`, :func:`compared`, :func:`with_floor`, :func:`default_gates` and
:func:`binary`, each in registry order (the order results and tables use); :func:`label`
names a metric as outputs show it.
Importing this module is cheap (no numpy), so the CLI and readers may use it freely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.errors import HarnessError

TOP_K = 10
"""The cutoff of every @k metric, of top-k exposure and of RBO's depth."""

FLOOR_FACTOR = 3.0
"""A gated metric's default floor (the mean drop never tolerated) is this times its margin."""

DEFAULT_RELEVANCE_LEVEL = 1
"""The grade from which a candidate counts as relevant for binary metrics (MRR, the best
relevant item's rank) where neither the dataset card nor ``--relevance-level`` says another:
trec_eval's default (``-l1``), and what every run recorded without a level meant."""

# Why a metric is undefined by the design (NaN, never a value that reads as "no bias" or
# "perfectly stable"): results record it per metric, summaries and reports print it.
UNDEFINED_SHORT_LIST = f"depth <= {TOP_K}: every candidate is in the top {TOP_K}"
UNDEFINED_ONE_ORDER = "one order in the design: nothing spreads across orders"
UNDEFINED_NO_PAIR = "one order shown: no pair of outputs to compare"
UNDEFINED_ONE_CANDIDATE = "one candidate: no order to change"

Direction = Literal["higher", "lower", "neither"]
"""Which way is better; ``neither`` for descriptive quantities that cannot be gated."""

Aggregation = Literal["mean over queries", "pooled over queries", "percentile over orders"]
"""How the run's summary value is formed (stored as the summary entry's ``aggregate``).

``mean over queries``: mean of the per-query values with a bootstrap 95% interval;
``pooled over queries``: one value from every query's outputs pooled (no interval);
``percentile over orders``: a percentile over every shown order's value.
"""


@dataclass(frozen=True)
class MetricSpec:
    """One metric and every role it plays.

    ``per_query``: recorded per query in results and baselines (so it can be compared and
    gated paired). ``per_order``: also recorded for every shown order (results
    ``per_order``). ``summary``: how the summary value is formed, None for per-query facts
    that are not summarised. ``headline``: shown in ``summary.md`` and the report's
    headline table. ``compared``: a row of the report's paired comparison table.
    ``gate_margin``: gated by default with this margin (floor ``FLOOR_FACTOR`` x margin).
    ``floor``: a stability quantity that ``--repeats`` also measures under NO change of order
    (the noise floor), shown beside it. ``binary``: counts a candidate as relevant or not,
    relevant = grade >= the run's relevance level (nDCG uses the grade itself), so its label
    carries the level (:func:`label`).
    """

    name: str
    shows: str
    direction: Direction
    summary: Aggregation | None = "mean over queries"
    per_query: bool = True
    per_order: bool = False
    headline: bool = False
    compared: bool = False
    gate_margin: float | None = None
    floor: bool = False
    binary: bool = False

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher"

    @property
    def lower_is_better(self) -> bool:
        return self.direction == "lower"

    @property
    def has_direction(self) -> bool:
        """Whether "worse" means anything: only then can the metric be gated or won."""
        return self.direction != "neither"


def at_k(base: str, k: int = TOP_K) -> str:
    """``ndcg`` -> ``ndcg@10``: the name of a metric cut off at rank ``k``."""
    return f"{base}@{k}"


NDCG = at_k("ndcg")
MRR = at_k("mrr")
NDCG_STD = f"{NDCG}_std"
NDCG_RANGE = f"{NDCG}_range"
NDCG_REFERENCE = f"{NDCG}_reference"
NDCG_FIRST_STAGE = f"{NDCG}_first_stage"
COPY_TAU = "copy_tau"
KENDALL_TAU = "kendall_tau"
RBO = at_k("rbo")
TOP1_AGREEMENT = "top1_agreement"
TOPK_JACCARD = f"top{TOP_K}_jaccard"
SPEARMAN = "spearman"
TOPK_SET_AGREEMENT = f"top{TOP_K}_set_agreement"
PPI = "ppi"
GPI = "gpi"
BEST_RELEVANT_RANK_MEAN = "best_relevant_rank_mean"
BEST_RELEVANT_RANK_VAR = "best_relevant_rank_var"
TIE_RATE = "tie_rate"
PARSE_REPAIR_RATE = "parse_repair_rate"
DISTINCT_RANKINGS = "distinct_rankings"
POSITION_BIAS_MAD = "position_bias_mad"
LATENCY_MS = "latency_ms"
FORWARD_PASSES = "forward_passes"
LATENCY_PER_SET_MS = "latency_per_set_ms"
N_CANDIDATES = "n_candidates"
N_ORDERS = "n_orders"
INVALID_SHARE = "invalid_share"
LATENCY_PERCENTILES = (50, 95)


def latency_percentile(pct: int) -> str:
    """Name of the summary's latency percentile over orders, e.g. ``latency_ms_p50``."""
    return f"{LATENCY_MS}_p{pct}"


UNDEFINED_ALL_INVALID = "every order's answer was invalid"
"""Why a query has no value: it has no order with valid answers (``invalid_share`` 1)."""

# Registry order is the order of results' per-query rows and summary, and of every table.
# Margins: a point of NDCG is the smallest change papers report; 0.02 of tau / RBO is well
# below the gap between an invariant reranker (1.0) and mild order sensitivity, yet above
# fp32 jitter (~1e-6).
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(N_CANDIDATES, "candidates in the query's set", "neither", summary=None),
    MetricSpec(N_ORDERS, "orders in the strategy's design", "neither", summary=None),
    MetricSpec(
        NDCG, "effectiveness", "higher", per_order=True, headline=True, compared=True,
        gate_margin=0.01,
    ),
    MetricSpec(
        MRR, "effectiveness", "higher", per_order=True, headline=True, compared=True, binary=True,
    ),
    MetricSpec(NDCG_STD, "effectiveness spread across orders (std)", "lower", floor=True),
    MetricSpec(
        NDCG_RANGE, "effectiveness spread across orders", "lower", headline=True, floor=True,
    ),
    # The reranker's own output for the first-stage order: still effectiveness, so higher.
    MetricSpec(NDCG_REFERENCE, "effectiveness on the first-stage order", "higher"),
    # The first stage's own ranking, not reranked: "did reranking help?" in the same table.
    MetricSpec(
        NDCG_FIRST_STAGE, "the first-stage ranking's own effectiveness (no reranking)",
        "neither", headline=True,
    ),
    MetricSpec(
        BEST_RELEVANT_RANK_MEAN, "rank of the best relevant item (1 = top)", "lower", binary=True,
    ),
    MetricSpec(
        BEST_RELEVANT_RANK_VAR, "variance of the best relevant item's rank across orders",
        "lower", floor=True, binary=True,
    ),
    MetricSpec(
        KENDALL_TAU, "stability (1 = order-invariant)", "higher", headline=True, compared=True,
        gate_margin=0.02, floor=True,
    ),
    MetricSpec(
        RBO, "stability, top-weighted", "higher", headline=True, compared=True,
        gate_margin=0.02, floor=True,
    ),
    MetricSpec(TOP1_AGREEMENT, "stability of the top item", "higher", headline=True, floor=True),
    MetricSpec(TOPK_JACCARD, f"overlap of the top-{TOP_K} sets", "higher", floor=True),
    MetricSpec(SPEARMAN, "stability, Spearman's rho (1 = order-invariant)", "higher", floor=True),
    MetricSpec(
        TOPK_SET_AGREEMENT, f"same top-{TOP_K} set (share of pairs of orders)", "higher",
        floor=True,
    ),
    MetricSpec(
        PPI, "pairwise preference instability across position buckets (0 = none)", "lower",
        headline=True, floor=True,
    ),
    MetricSpec(
        GPI, "preferences no consensus ranking satisfies (0 = all orders agree)", "lower",
        headline=True, floor=True,
    ),
    MetricSpec(
        DISTINCT_RANKINGS, "different rankings over the orders (1 = invariant)", "lower",
        floor=True,
    ),
    MetricSpec(
        POSITION_BIAS_MAD, "position bias (0 = none)", "lower", summary="pooled over queries",
        headline=True,
    ),
    # Descriptive: how much the output follows the shown order (the "copy rate").
    MetricSpec(
        COPY_TAU, "Kendall tau of output vs shown order (1 = copies its input, 0 = ignores it)",
        "neither", headline=True,
    ),
    MetricSpec(TIE_RATE, "adjacent ranks decided by tie-breaking (score-based rerankers)", "lower"),
    MetricSpec(
        PARSE_REPAIR_RATE, "outputs the parser had to repair (generative rerankers)", "lower",
    ),
    MetricSpec(LATENCY_MS, "latency per order, ms (median over the query's orders)", "lower"),
    # Cost: a meta-reranker's orders sum their inner calls' passes (m x its inner reranker's).
    MetricSpec(FORWARD_PASSES, "model forward passes per order (mean over orders)", "lower"),
    # Per-set cost beside per-order: a reranker that reuses work across a set's orders
    # (pointwise) has a bimodal per-order latency whose median is neither cost.
    MetricSpec(
        LATENCY_PER_SET_MS, "latency of a candidate set, ms (all its orders summed)", "lower",
        headline=True,
    ),
    # Validity: orders whose answer stayed invalid (harness.validity), left out of every other
    # metric. Per query: its share of the query's orders; summary: invalid orders / orders.
    # Gated by its own rule (the gate's validity check), not by a margin on a paired mean.
    MetricSpec(
        INVALID_SHARE, "orders with an invalid answer (excluded from the other metrics)", "lower",
        summary="pooled over queries", headline=True,
    ),
    *(
        MetricSpec(
            latency_percentile(pct), "latency per order, ms", "lower",
            summary="percentile over orders", per_query=False, headline=True,
        )
        for pct in LATENCY_PERCENTILES
    ),
)  # fmt: skip


def label(name: str, relevance_level: int | None) -> str:
    """How outputs name a metric: a binary one with the grade it counts as relevant,
    ``mrr@10 (rel ≥ 2)``; any other (or with no level given) by its name."""
    binary = any(spec.binary for spec in METRICS if spec.name == name)
    return f"{name} (rel ≥ {relevance_level})" if binary and relevance_level is not None else name


def get(name: str) -> MetricSpec:
    """The metric called ``name``; a one-line HarnessError listing the known names otherwise."""
    for spec in METRICS:
        if spec.name == name:
            return spec
    known = ", ".join(spec.name for spec in METRICS)
    raise HarnessError(f"unknown metric {name!r}; known: {known}")


def per_query() -> tuple[MetricSpec, ...]:
    """Metrics (and per-query facts) recorded for every query, in results order."""
    return tuple(spec for spec in METRICS if spec.per_query)


def per_order() -> tuple[MetricSpec, ...]:
    """Metrics also recorded for every shown order (results ``per_order``)."""
    return tuple(spec for spec in METRICS if spec.per_order)


def descriptive() -> tuple[MetricSpec, ...]:
    """Quantities with no direction (facts such as ``n_candidates``): never compared or gated."""
    return tuple(spec for spec in METRICS if not spec.has_direction)


def summarized() -> tuple[MetricSpec, ...]:
    """Metrics with a summary value, in the summary's order."""
    return tuple(spec for spec in METRICS if spec.summary is not None)


def headline() -> tuple[MetricSpec, ...]:
    """The rows of ``summary.md`` and of the report's headline table."""
    return tuple(spec for spec in METRICS if spec.headline)


def compared() -> tuple[MetricSpec, ...]:
    """The rows of the report's paired comparison table."""
    return tuple(spec for spec in METRICS if spec.compared)


def with_floor() -> tuple[MetricSpec, ...]:
    """Stability quantities that ``--repeats`` also measures under no change of order."""
    return tuple(spec for spec in METRICS if spec.floor)


def binary() -> tuple[MetricSpec, ...]:
    """Metrics that count a candidate as relevant or not, at the run's relevance level."""
    return tuple(spec for spec in METRICS if spec.binary)


def default_gates() -> tuple[MetricSpec, ...]:
    """The metrics the gate checks when no ``--max-drop`` is given."""
    return tuple(spec for spec in METRICS if spec.gate_margin is not None)
