"""Every metric a run reports, declared once: name, direction, label, aggregation and role.

Summary, ``summary.md``, the report's tables, its comparisons and the gate all read this
module, so what a metric means (is lower better? is it in the headline? is it gated by
default?) cannot drift between them. Names with a cutoff are built from ``TOP_K``.

Each per-query metric carries its kernel (``MetricSpec.kernel``: one query's
:class:`~harness.metrics.orders.QueryOrders` -> a value), and the conditions under which the
design leaves it undefined (``undefined_when``), so the summary and the noise floor iterate
this registry instead of calling kernels by hand. A :class:`MetricRegistry` is the built-ins
(:data:`BUILTIN`) plus a run's own metrics (:meth:`MetricRegistry.with_metrics`,
:func:`load_modules` for ``--metrics-module``); results record the added specs, so reports
and gates read them without importing the user's module again.

Lookups on a registry (and, for the built-ins, as module functions): ``get`` (one metric,
HarnessError naming the known ones otherwise), ``per_query``, ``per_order``, ``descriptive``,
``summarized``, ``headline``, ``compared``, ``with_floor``, ``default_gates`` and ``binary``,
each in registry order (the order results and tables use); ``label`` names a metric as
outputs show it.
Importing this module is cheap (no numpy: the built-in kernels are imported when first
called), so the CLI and readers may use it freely.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, get_args

from harness.errors import HarnessError
from harness.metrics.names import (  # noqa: F401 (re-exported: readers import them here)
    BEST_RELEVANT_RANK_MEAN,
    BEST_RELEVANT_RANK_VAR,
    COPY_TAU,
    DISTINCT_RANKINGS,
    FORWARD_PASSES,
    GPI,
    INVALID_SHARE,
    KENDALL_TAU,
    LATENCY_MS,
    LATENCY_PER_SET_MS,
    LATENCY_PERCENTILES,
    MRR,
    N_CANDIDATES,
    N_ORDERS,
    NDCG,
    NDCG_FIRST_STAGE,
    NDCG_RANGE,
    NDCG_REFERENCE,
    NDCG_STD,
    PARSE_REPAIR_RATE,
    POSITION_BIAS_MAD,
    PPI,
    RBO,
    SPEARMAN,
    TIE_RATE,
    TOP1_AGREEMENT,
    TOPK_JACCARD,
    TOPK_SET_AGREEMENT,
    at_k,
    latency_percentile,
)
from harness.metrics.names import (  # the names, here where every reader has found them
    TOP_K as TOP_K,
)

if TYPE_CHECKING:
    from harness.metrics.orders import QueryOrders

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

Undefined = Literal["one candidate", "one design order", "no pair", "short list"]
"""A condition of a query's design under which a metric is undefined (``undefined_when``):
the set has one candidate; the design has one order; one order is shown (no pair of
outputs, :attr:`QueryOrders.compared` < 2); the set has at most ``TOP_K`` candidates."""

UNDEFINED_REASONS: Mapping[str, str] = {
    "one candidate": UNDEFINED_ONE_CANDIDATE,
    "one design order": UNDEFINED_ONE_ORDER,
    "no pair": UNDEFINED_NO_PAIR,
    "short list": UNDEFINED_SHORT_LIST,
}
"""Each condition's recorded reason, by precedence: where several of a metric's conditions
hold, the first one listed here is the reason."""

FloorKind = Literal["pairs", "blocks", "design blocks", "blocks in design cells"]
"""How ``--repeats`` measures a metric under no change of order (``harness.results.noise_floor``):
``pairs``, a mean over pairs of outputs: the kernel over the identity reruns; ``blocks``, a
quantity that grows with the outputs compared: the kernel over matched blocks of the
compared outputs and of the reruns; ``design blocks``, the same over the design's orders;
``blocks in design cells``: as ``blocks``, the reruns read in the cells of the design
block's shown orders (PPI)."""

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
    (the noise floor), shown beside it; how, see :data:`FloorKind`. ``binary``: counts a
    candidate as relevant or not, relevant = grade >= the run's relevance level (nDCG uses
    the grade itself), so its label carries the level (:func:`label`).

    ``kernel``: the per-query value from one query's
    :class:`~harness.metrics.orders.QueryOrders` (a pure function; NaN where it has none).
    ``undefined_when``: the design conditions (:data:`Undefined`) under which the value would
    read as a finding (0 bias, perfect agreement, no spread): the summary records NaN and the
    reason instead of calling the kernel. ``without_valid_orders``: the kernel also runs for
    a query none of whose orders got a valid answer (its facts: size, invalid share); every
    other metric is then NaN. Results record every field but the kernel (:meth:`to_dict`).
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
    floor: FloorKind | None = None
    binary: bool = False
    undefined_when: tuple[Undefined, ...] = ()
    without_valid_orders: bool = False
    kernel: Callable[[QueryOrders], float] | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The spec as results record it: every field but the kernel."""
        return {
            f.name: list(value) if isinstance(value := getattr(self, f.name), tuple) else value
            for f in fields(self)
            if f.name != "kernel"
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "results") -> MetricSpec:
        """A recorded spec (no kernel: enough to show, compare and gate its values)."""
        known = {f.name for f in fields(cls)} - {"kernel"}
        try:
            values = {str(k): v for k, v in data.items()}
            unknown = sorted(set(values) - known)
            if unknown:
                raise ValueError(f"unknown fields {unknown}")
            values["undefined_when"] = tuple(values.get("undefined_when") or ())
            return check_spec(cls(**values))
        except (TypeError, ValueError, AttributeError) as exc:
            raise HarnessError(f"{where}: malformed metric spec {data!r} ({exc})") from exc

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


UNDEFINED_ALL_INVALID = "every order's answer was invalid"
"""Why a query has no value: it has no order with valid answers (``invalid_share`` 1)."""

# Registry order is the order of results' per-query rows and summary, and of every table.
# Margins: a point of NDCG is the smallest change papers report; 0.02 of tau / RBO is well
# below the gap between an invariant reranker (1.0) and mild order sensitivity, yet above
# fp32 jitter (~1e-6).
_PAIR: tuple[Undefined, ...] = ("no pair", "one candidate")
_SPREAD: tuple[Undefined, ...] = ("one design order", "one candidate")


@dataclass(frozen=True)
class _Builtin:
    """A kernel of :mod:`harness.metrics.kernels`, imported when first called (this module
    stays free of numpy)."""

    name: str

    def __call__(self, orders: QueryOrders) -> float:
        from harness.metrics import kernels

        return getattr(kernels, self.name)(orders)


def _k(name: str) -> _Builtin:
    return _Builtin(name)


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        N_CANDIDATES, "candidates in the query's set", "neither", summary=None,
        without_valid_orders=True, kernel=_k("n_candidates"),
    ),
    MetricSpec(
        N_ORDERS, "orders in the strategy's design", "neither", summary=None,
        without_valid_orders=True, kernel=_k("n_orders"),
    ),
    MetricSpec(
        NDCG, "effectiveness", "higher", per_order=True, headline=True, compared=True,
        gate_margin=0.01, kernel=_k("ndcg"),
    ),
    MetricSpec(
        MRR, "effectiveness", "higher", per_order=True, headline=True, compared=True, binary=True,
        kernel=_k("mrr"),
    ),
    MetricSpec(
        NDCG_STD, "effectiveness spread across orders (std)", "lower", floor="design blocks",
        undefined_when=_SPREAD, kernel=_k("ndcg_std"),
    ),
    MetricSpec(
        NDCG_RANGE, "effectiveness spread across orders", "lower", headline=True,
        floor="design blocks", undefined_when=_SPREAD, kernel=_k("ndcg_range"),
    ),
    # The reranker's own output for the first-stage order: still effectiveness, so higher.
    MetricSpec(
        NDCG_REFERENCE, "effectiveness on the first-stage order", "higher",
        kernel=_k("ndcg_reference"),
    ),
    # The first stage's own ranking, not reranked: "did reranking help?" in the same table.
    MetricSpec(
        NDCG_FIRST_STAGE, "the first-stage ranking's own effectiveness (no reranking)",
        "neither", headline=True, without_valid_orders=True, kernel=_k("ndcg_first_stage"),
    ),
    MetricSpec(
        BEST_RELEVANT_RANK_MEAN, "rank of the best relevant item (1 = top)", "lower", binary=True,
        kernel=_k("best_relevant_rank_mean"),
    ),
    MetricSpec(
        BEST_RELEVANT_RANK_VAR, "variance of the best relevant item's rank across orders",
        "lower", floor="design blocks", binary=True, undefined_when=_SPREAD,
        kernel=_k("best_relevant_rank_var"),
    ),
    MetricSpec(
        KENDALL_TAU, "stability (1 = order-invariant)", "higher", headline=True, compared=True,
        gate_margin=0.02, floor="pairs", undefined_when=_PAIR, kernel=_k("kendall_tau"),
    ),
    MetricSpec(
        RBO, "stability, top-weighted", "higher", headline=True, compared=True,
        gate_margin=0.02, floor="pairs", undefined_when=_PAIR, kernel=_k("rbo"),
    ),
    MetricSpec(
        TOP1_AGREEMENT, "stability of the top item", "higher", headline=True, floor="pairs",
        undefined_when=_PAIR, kernel=_k("top1_agreement"),
    ),
    MetricSpec(
        TOPK_JACCARD, f"overlap of the top-{TOP_K} sets", "higher", floor="pairs",
        undefined_when=(*_PAIR, "short list"), kernel=_k("topk_jaccard"),
    ),
    MetricSpec(
        SPEARMAN, "stability, Spearman's rho (1 = order-invariant)", "higher", floor="pairs",
        undefined_when=_PAIR, kernel=_k("spearman"),
    ),
    MetricSpec(
        TOPK_SET_AGREEMENT, f"same top-{TOP_K} set (share of pairs of orders)", "higher",
        floor="pairs", undefined_when=(*_PAIR, "short list"), kernel=_k("topk_set_agreement"),
    ),
    MetricSpec(
        PPI, "pairwise preference instability across position buckets (0 = none)", "lower",
        headline=True, floor="blocks in design cells", undefined_when=_PAIR, kernel=_k("ppi"),
    ),
    MetricSpec(
        GPI, "preferences no consensus ranking satisfies (0 = all orders agree)", "lower",
        headline=True, floor="blocks", undefined_when=_PAIR, kernel=_k("gpi"),
    ),
    MetricSpec(
        DISTINCT_RANKINGS, "different rankings over the orders (1 = invariant)", "lower",
        floor="blocks", undefined_when=_PAIR, kernel=_k("distinct_rankings"),
    ),
    MetricSpec(
        POSITION_BIAS_MAD, "position bias (0 = none)", "lower", summary="pooled over queries",
        headline=True, undefined_when=("short list",), kernel=_k("position_bias_mad"),
    ),
    # Descriptive: how much the output follows the shown order (the "copy rate").
    MetricSpec(
        COPY_TAU, "Kendall tau of output vs shown order (1 = copies its input, 0 = ignores it)",
        "neither", headline=True, undefined_when=("one candidate",), kernel=_k("copy_tau"),
    ),
    MetricSpec(
        TIE_RATE, "adjacent ranks decided by tie-breaking (score-based rerankers)", "lower",
        kernel=_k("tie_rate"),
    ),
    MetricSpec(
        PARSE_REPAIR_RATE, "outputs the parser had to repair (generative rerankers)", "lower",
        kernel=_k("parse_repair_rate"),
    ),
    MetricSpec(
        LATENCY_MS, "latency per order, ms (median over the query's orders)", "lower",
        kernel=_k("latency_ms"),
    ),
    # Cost: a meta-reranker's orders sum their inner calls' passes (m x its inner reranker's).
    MetricSpec(
        FORWARD_PASSES, "model forward passes per order (mean over orders)", "lower",
        kernel=_k("forward_passes"),
    ),
    # Per-set cost beside per-order: a reranker that reuses work across a set's orders
    # (pointwise) has a bimodal per-order latency whose median is neither cost.
    MetricSpec(
        LATENCY_PER_SET_MS, "latency of a candidate set, ms (all its orders summed)", "lower",
        headline=True, kernel=_k("latency_per_set_ms"),
    ),
    # Validity: orders whose answer stayed invalid (harness.validity), left out of every other
    # metric. Per query: its share of the query's orders; summary: invalid orders / orders.
    # Gated by its own rule (the gate's validity check), not by a margin on a paired mean.
    MetricSpec(
        INVALID_SHARE, "orders with an invalid answer (excluded from the other metrics)", "lower",
        summary="pooled over queries", headline=True, without_valid_orders=True,
        kernel=_k("invalid_share"),
    ),
    *(
        MetricSpec(
            latency_percentile(pct), "latency per order, ms", "lower",
            summary="percentile over orders", per_query=False, headline=True,
        )
        for pct in LATENCY_PERCENTILES
    ),
)  # fmt: skip


def check_spec(spec: MetricSpec) -> MetricSpec:
    """``spec`` if its fields are consistent, else a one-line HarnessError naming it."""
    problems = []
    if not isinstance(spec.name, str) or not spec.name.strip():
        problems.append("name must be a non-empty string")
    if spec.direction not in get_args(Direction):
        problems.append(f"direction must be one of {get_args(Direction)}")
    if spec.summary is not None and spec.summary not in get_args(Aggregation):
        problems.append(f"summary must be None or one of {get_args(Aggregation)}")
    if spec.floor is not None and spec.floor not in get_args(FloorKind):
        problems.append(f"floor must be None or one of {get_args(FloorKind)}")
    unknown = [c for c in spec.undefined_when if c not in UNDEFINED_REASONS]
    if unknown:
        problems.append(f"undefined_when {unknown}: known conditions are {list(UNDEFINED_REASONS)}")
    if spec.gate_margin is not None:
        margin = spec.gate_margin
        if isinstance(margin, bool) or not isinstance(margin, int | float):
            problems.append("gate_margin must be a number")
        elif not math.isfinite(margin) or margin < 0:
            problems.append("gate_margin must be a number >= 0")
        elif not spec.has_direction or not spec.per_query:
            problems.append("gate_margin needs a direction and per-query values")
    if problems:
        raise HarnessError(f"metric {spec.name!r}: {'; '.join(problems)}")
    return spec


def _check_added(spec: MetricSpec) -> MetricSpec:
    """A run's own metric: a per-query kernel summarised as a mean over queries (or not at
    all); per-order values and pooled summaries are the built-ins' (computed batched)."""
    check_spec(spec)
    if not spec.per_query or spec.per_order:
        raise HarnessError(
            f"metric {spec.name!r}: an added metric is computed per query by its kernel "
            "(per_query=True, per_order=False)"
        )
    if spec.summary not in (None, "mean over queries"):
        raise HarnessError(
            f"metric {spec.name!r}: an added metric is summarised as 'mean over queries' or "
            f"not at all, not {spec.summary!r}"
        )
    return spec


@dataclass(frozen=True)
class MetricRegistry:
    """The built-in metrics and, after them, the ones a run adds (``added``): every reader
    of a run's metrics asks its registry, never a global list."""

    added: tuple[MetricSpec, ...] = ()

    @property
    def specs(self) -> tuple[MetricSpec, ...]:
        return METRICS + self.added

    def with_metrics(self, *specs: MetricSpec, needs_kernel: bool = True) -> MetricRegistry:
        """This registry and ``specs`` after it; HarnessError on a name taken, a spec an
        added metric cannot have, or (``needs_kernel``) a spec without a kernel."""
        taken = {spec.name for spec in self.specs}
        for spec in specs:
            if not isinstance(spec, MetricSpec):
                raise HarnessError(f"not a MetricSpec: {spec!r}")
            _check_added(spec)
            if spec.name in taken:
                raise HarnessError(f"metric {spec.name!r} is already registered")
            if needs_kernel and not callable(spec.kernel):
                raise HarnessError(f"metric {spec.name!r} has no kernel (a QueryOrders -> float)")
            taken.add(spec.name)
        return MetricRegistry(self.added + tuple(specs))

    def merged(self, *others: MetricRegistry) -> MetricRegistry:
        """This registry with the metrics ``others`` added that it lacks (by name, the first
        spec of a name kept): the metrics of several runs read together (a report)."""
        added = {spec.name: spec for spec in self.added}
        for other in others:
            for spec in other.added:
                added.setdefault(spec.name, spec)
        return MetricRegistry(tuple(added.values()))

    def get(self, name: str) -> MetricSpec:
        """The metric called ``name``; a one-line HarnessError listing the known names."""
        for spec in self.specs:
            if spec.name == name:
                return spec
        known = ", ".join(spec.name for spec in self.specs)
        raise HarnessError(f"unknown metric {name!r}; known: {known}")

    def label(self, name: str, relevance_level: int | None) -> str:
        """How outputs name a metric: a binary one with the grade it counts as relevant,
        ``mrr@10 (rel ≥ 2)``; any other (or with no level given) by its name."""
        binary = any(spec.binary for spec in self.specs if spec.name == name)
        return (
            f"{name} (rel ≥ {relevance_level})" if binary and relevance_level is not None else name
        )

    def per_query(self) -> tuple[MetricSpec, ...]:
        """Metrics (and per-query facts) recorded for every query, in results order."""
        return tuple(spec for spec in self.specs if spec.per_query)

    def per_order(self) -> tuple[MetricSpec, ...]:
        """Metrics also recorded for every shown order (results ``per_order``)."""
        return tuple(spec for spec in self.specs if spec.per_order)

    def descriptive(self) -> tuple[MetricSpec, ...]:
        """Quantities with no direction (facts such as ``n_candidates``): never compared or
        gated."""
        return tuple(spec for spec in self.specs if not spec.has_direction)

    def summarized(self) -> tuple[MetricSpec, ...]:
        """Metrics with a summary value, in the summary's order."""
        return tuple(spec for spec in self.specs if spec.summary is not None)

    def headline(self) -> tuple[MetricSpec, ...]:
        """The rows of ``summary.md`` and of the report's headline table."""
        return tuple(spec for spec in self.specs if spec.headline)

    def compared(self) -> tuple[MetricSpec, ...]:
        """The rows of the report's paired comparison table."""
        return tuple(spec for spec in self.specs if spec.compared)

    def with_floor(self) -> tuple[MetricSpec, ...]:
        """Stability quantities that ``--repeats`` also measures under no change of order."""
        return tuple(spec for spec in self.specs if spec.floor is not None)

    def binary(self) -> tuple[MetricSpec, ...]:
        """Metrics that count a candidate as relevant or not, at the run's relevance level."""
        return tuple(spec for spec in self.specs if spec.binary)

    def default_gates(self) -> tuple[MetricSpec, ...]:
        """The metrics the gate checks when no ``--max-drop`` is given."""
        return tuple(spec for spec in self.specs if spec.gate_margin is not None)


BUILTIN = MetricRegistry()
"""The harness's own metrics: what every run computes."""


def load_modules(
    modules: str | Sequence[str] | None, base: MetricRegistry = BUILTIN
) -> MetricRegistry:
    """``base`` with the metrics of each module (comma-separated or a list of importable
    module paths, e.g. ``my_pkg.my_metrics``): each module's ``METRICS``, a sequence of
    :class:`MetricSpec` with kernels. A module that cannot be imported or has no ``METRICS``
    is a one-line HarnessError."""
    names = modules.split(",") if isinstance(modules, str) else list(modules or ())
    registry = base
    for name in (n.strip() for n in names):
        if not name:
            continue
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # any failure to import is the user module's: say which
            raise HarnessError(
                f"--metrics-module {name}: cannot import it ({type(exc).__name__}: {exc})"
            ) from exc
        specs = getattr(module, "METRICS", None)
        if not isinstance(specs, Sequence) or isinstance(specs, str):
            raise HarnessError(
                f"--metrics-module {name}: defines no METRICS (a list of MetricSpec)"
            )
        registry = registry.with_metrics(*specs)
    return registry


def recorded(specs: Sequence[Mapping[str, Any]] | None, where: str = "results") -> MetricRegistry:
    """The registry of a run whose results record ``specs`` (the metrics it added; none in
    runs written before metrics could be added): enough to show and gate their values."""
    return BUILTIN.with_metrics(
        *(MetricSpec.from_dict(spec, where) for spec in specs or ()), needs_kernel=False
    )


# The built-ins' lookups as module functions (the registry of a run that adds no metric).
label = BUILTIN.label
get = BUILTIN.get
per_query = BUILTIN.per_query
per_order = BUILTIN.per_order
descriptive = BUILTIN.descriptive
summarized = BUILTIN.summarized
headline = BUILTIN.headline
compared = BUILTIN.compared
with_floor = BUILTIN.with_floor
binary = BUILTIN.binary
default_gates = BUILTIN.default_gates
