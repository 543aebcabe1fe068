"""The regression gate: fail a build when a reranker got less accurate or less stable.

For each gated metric, with per-query differences d_q = new_q - baseline_q oriented so that
negative means *worse* (flipped for lower-is-better metrics) and an allowed drop ``margin``:

* H0 (the build is fine): mean(d) >= -margin, i.e. any drop is within the margin.
  H1 (a regression):      mean(d) <  -margin.
* Sign-flip test: one-sided paired sign-flip permutation test of d + margin (scipy
  ``permutation_test``, ``permutation_type="samples"``, seeded; exact when 2**n <= 9999), so
  its p-value is the chance of a mean this low if the drop were exactly the margin. Its noise
  is the queries: it asks whether the drop is beyond the margin for queries like these.
* Order-noise test, for metrics whose per-query spread across orders is recorded (nDCG@10)
  and runs of random orders: the same H0 on *these* queries, the noise being only which
  orders each run drew (:func:`harness.metrics.paired.order_noise_test`). A drop confined to
  a few queries leaves most d_q at 0, where no sign-flip test can be significant (5 non-zero
  differences give p >= 1/32); this test sees it when the order noise is small.
* All p-values (every metric's tests) are Holm-adjusted together; a metric FAILS when one of
  its Holm-adjusted p < alpha, so the chance that a build which is fine on every metric
  fails is at most alpha.
* Hard floor: a metric also FAILS when its observed mean drop exceeds ``floor`` (default 3 x
  margin), whatever p says: a handful of queries has too little power to prove a drop, and a
  large fall must not pass just because it is not "significant".
* Presets that declare ``order_invariant``: any query of the new run with Kendall tau below
  1 - 1e-6 fails the gate outright (the invariance is a contract, not a statistic).
* A metric the run's design leaves undefined for every query (its reason recorded, e.g.
  position bias with at most 10 candidates) is skipped with a note, never passed on a number;
  a metric undefined for every query without such a reason fails. Run and baseline must
  count relevance from the same grade (binary metrics such as MRR).

The gate therefore only fails on evidence of a real drop (or a large one); a rerun of the same
configuration, whose differences are all zero, passes with p = 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from harness.config import check_seed
from harness.errors import HarnessError
from harness.gates.baseline import DESIGN_KEYS, Baseline
from harness.metrics import registry
from harness.metrics.paired import (
    OrderNoiseTest,
    detectable_drop,
    holm,
    order_noise_detectable,
    order_noise_test,
    paired_difference_ci,
    sign_flip_pvalue,
)
from harness.validity import GATE_MARGIN, gate_allows

INVARIANCE_TOLERANCE = 1e-6
ORDER_SPREAD: Mapping[str, str] = {registry.NDCG: registry.NDCG_STD}
"""Metrics whose per-query spread across the shown orders is recorded (population standard
deviation over the design orders), so the order-noise test can weigh their differences."""


@dataclass(frozen=True)
class GateSpec:
    """One gated metric: the drop tolerated (margin) and the mean drop never tolerated (floor).
    ``metrics``: the registry that knows it (the run's: the built-ins and what it added)."""

    metric: str
    margin: float
    floor: float
    metrics: registry.MetricRegistry = field(default=registry.BUILTIN, compare=False, repr=False)

    def __post_init__(self) -> None:
        _gateable(self.metric, self.metrics)

    @property
    def higher_is_better(self) -> bool:
        """The registry's direction (never "neither": such metrics are refused)."""
        return self.metrics.get(self.metric).higher_is_better


def _gateable(metric: str, metrics: registry.MetricRegistry = registry.BUILTIN) -> None:
    """HarnessError unless ``metric`` can be gated: registered, recorded per query (so it can
    be paired) and with a direction (a descriptive quantity has no "worse")."""
    gateable = [s.name for s in metrics.per_query() if s.has_direction]
    if metric not in {s.name for s in metrics.specs}:
        raise HarnessError(f"unknown metric {metric!r}; gateable metrics: {', '.join(gateable)}")
    spec = metrics.get(metric)
    if not spec.per_query:
        raise HarnessError(f"metric {metric!r} is not recorded per query, so it cannot be gated")
    if not spec.has_direction:
        raise HarnessError(
            f"metric {metric!r} is descriptive (neither higher nor lower is better), "
            "so it cannot be gated"
        )


# Margins are in the metric's own units and declared in the registry (with why).
DEFAULT_GATES: tuple[GateSpec, ...] = tuple(
    GateSpec(spec.name, spec.gate_margin, registry.FLOOR_FACTOR * spec.gate_margin)
    for spec in registry.default_gates()
    if spec.gate_margin is not None
)


@dataclass(frozen=True)
class MetricVerdict:
    spec: GateSpec
    n: int
    baseline_mean: float
    new_mean: float
    diff: float  # new - baseline, in the metric's own direction
    ci95: tuple[float, float]
    p_value: float  # one-sided, before correction
    p_holm: float
    alpha: float
    n_total: int = 0  # queries in the comparison; n of them are defined in both runs
    newly_undefined: int = 0  # defined in the baseline, undefined (NaN) in the new run
    detectable: float = math.inf  # true mean drop found with 80% power (either test, Holm)
    noise_p: float = math.nan  # order-noise test, one-sided, before correction (NaN: n/a)
    noise_p_holm: float = math.nan
    noise_se: float = math.nan  # standard error of the mean difference from order noise alone
    noise_note: str = ""  # why the order-noise test does not apply
    # Why the design leaves the metric undefined, where it does (``{reason: queries}`` of the
    # new run, else the baseline's): undefined for every query, the metric is skipped, not
    # passed on a value that reads as a finding; for some, those queries are left out.
    by_design: Mapping[str, int] = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        """Undefined by the design for every query: nothing to test, and nothing failed."""
        return self.n == 0 and bool(self.by_design)

    @property
    def drop(self) -> float:
        """Mean drop (positive = worse), whatever the metric's direction."""
        return -self.diff if self.spec.higher_is_better else self.diff

    @property
    def significant_sign_flip(self) -> bool:
        return self.p_holm < self.alpha

    @property
    def significant_order_noise(self) -> bool:
        return self.noise_p_holm < self.alpha  # False when the test does not apply (NaN)

    @property
    def significant(self) -> bool:
        return self.significant_sign_flip or self.significant_order_noise

    @property
    def below_floor(self) -> bool:
        return self.drop > self.spec.floor + 1e-12

    @property
    def passed(self) -> bool:
        return not self.failed_by

    @property
    def failed_by(self) -> tuple[str, ...]:
        """The checks this metric failed: ``undefined``, ``sign_flip``, ``order_noise``,
        ``floor`` (empty when it passed, and for a metric skipped as undefined by design)."""
        if self.skipped:
            return ()
        if self.n == 0:
            return ("undefined",)
        checks = (
            ("undefined", bool(self.newly_undefined)),
            ("sign_flip", self.significant_sign_flip),
            ("order_noise", self.significant_order_noise),
            ("floor", self.below_floor),
        )
        return tuple(name for name, failed in checks if failed)

    @property
    def reason(self) -> str:
        if self.skipped:
            return f"skipped: undefined ({'; '.join(self.by_design)})"
        if self.n == 0:
            return (
                "FAIL: undefined for every query, so nothing can be compared (gate another metric)"
            )
        reasons = []
        if self.newly_undefined:
            reasons.append(f"undefined for {self.newly_undefined} queries defined in the baseline")
        if self.significant_sign_flip:
            reasons.append(
                "drop beyond margin across queries "
                f"(sign-flip p={self.p_holm:.3g} < {self.alpha:g})"
            )
        if self.significant_order_noise:
            reasons.append(
                "drop beyond margin on these queries, beyond order noise "
                f"(order-noise p={self.noise_p_holm:.3g} < {self.alpha:g})"
            )
        if self.below_floor:
            reasons.append(f"mean drop {self.drop:.4f} > floor {self.spec.floor:g}")
        return "FAIL: " + "; ".join(reasons) if reasons else "pass"


@dataclass(frozen=True)
class InvarianceVerdict:
    """Queries of an order-invariant-declared reranker whose outputs moved with the order."""

    violations: tuple[tuple[str, float], ...]
    min_tau: float

    @property
    def passed(self) -> bool:
        return not self.violations


@dataclass(frozen=True)
class ValidityVerdict:
    """The share of orders whose answer stayed invalid, baseline and new
    (:mod:`harness.validity`): fails when it rises (:func:`harness.validity.gate_allows`)."""

    baseline_share: float
    new_share: float

    @property
    def passed(self) -> bool:
        return gate_allows(self.baseline_share, self.new_share)

    @property
    def rule(self) -> str:
        if self.baseline_share == 0:
            return "0 (the baseline had none)"
        return f"<= baseline + {GATE_MARGIN:g}"

    @property
    def reason(self) -> str:
        if self.passed:
            return "pass"
        return f"FAIL: invalid share rose from {self.baseline_share:.4f} to {self.new_share:.4f}"


@dataclass(frozen=True)
class GateVerdict:
    baseline: Baseline
    new: Baseline
    metrics: tuple[MetricVerdict, ...]
    invariance: InvarianceVerdict | None
    alpha: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    validity: ValidityVerdict = ValidityVerdict(0.0, 0.0)

    @property
    def passed(self) -> bool:
        invariant_ok = self.invariance is None or self.invariance.passed
        return invariant_ok and self.validity.passed and all(m.passed for m in self.metrics)


def parse_specs(
    max_drops: Sequence[str],
    floors: Sequence[str] = (),
    metrics: registry.MetricRegistry = registry.BUILTIN,
) -> tuple[GateSpec, ...]:
    """``["ndcg@10=0.01", ...]`` to specs; with none given, the defaults (floors may override):
    every metric of ``metrics`` (the run's) with a ``gate_margin``.

    Given ``--max-drop`` options replace the default set: exactly the listed metrics are
    gated. A metric without ``--floor`` gets floor = 3 x margin.
    """
    margins = _parse_pairs(max_drops, "--max-drop")
    floor_values = _parse_pairs(floors, "--floor")
    if margins:
        specs = [
            GateSpec(m, v, floor_values.get(m, registry.FLOOR_FACTOR * v), metrics)
            for m, v in margins.items()
        ]
    else:
        specs = [
            GateSpec(
                s.name,
                s.gate_margin,
                floor_values.get(s.name, registry.FLOOR_FACTOR * s.gate_margin),
                metrics,
            )
            for s in metrics.default_gates()
            if s.gate_margin is not None
        ]
    unknown = set(floor_values) - {s.metric for s in specs}
    if unknown:
        raise HarnessError(f"--floor given for metrics that are not gated: {sorted(unknown)}")
    for spec in specs:
        if spec.floor < spec.margin:
            raise HarnessError(
                f"--floor for {spec.metric} ({spec.floor:g}) is below its margin ({spec.margin:g})"
            )
    return tuple(specs)


def _parse_pairs(items: Iterable[str], option: str) -> dict[str, float]:
    pairs: dict[str, float] = {}
    for item in items:
        metric, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not metric.strip() or not math.isfinite(number) or number < 0:
            raise HarnessError(f"{option} wants METRIC=NUMBER with a number >= 0, got {item!r}")
        pairs[metric.strip()] = number
    return pairs


def check_compatible(baseline: Baseline, new: Baseline) -> None:
    """Raise a HarnessError naming every provenance mismatch that breaks the pairing."""
    problems = []
    checks = (
        (
            "dataset fingerprint",
            baseline.dataset.get("fingerprint"),
            new.dataset.get("fingerprint"),
        ),
        ("dataset depth", baseline.dataset.get("depth"), new.dataset.get("depth")),
        (
            "relevance level of binary metrics (--relevance-level)",
            baseline.relevance_level,
            new.relevance_level,
        ),
        (
            "permutation strategy",
            baseline.permutations.get("strategy"),
            new.permutations.get("strategy"),
        ),
        (
            "random orders per query (--perms)",
            baseline.permutations.get("random_orders"),
            new.permutations.get("random_orders"),
        ),
        ("permutation seed", baseline.permutations.get("seed"), new.permutations.get("seed")),
        *(
            (f"order design --{key.removesuffix('_sha256').replace('_', '-')}",
             baseline.permutations.get(key), new.permutations.get(key))
            for key in DESIGN_KEYS
        ),
    )  # fmt: skip
    for what, old, now in checks:
        if old != now:
            problems.append(f"{what}: baseline {old!r}, run {now!r}")
    if set(baseline.query_ids) != set(new.query_ids):
        only_old = sorted(set(baseline.query_ids) - set(new.query_ids))
        only_new = sorted(set(new.query_ids) - set(baseline.query_ids))
        problems.append(
            f"query set: {len(only_old)} only in baseline {_few(only_old)}, "
            f"{len(only_new)} only in run {_few(only_new)}"
        )
    if problems:
        raise HarnessError(
            "run and baseline are not comparable: "
            + "; ".join(problems)
            + " (rerun with the baseline's settings, or record a new baseline)"
        )


def _few(ids: Sequence[str], k: int = 3) -> str:
    return "[" + ", ".join(ids[:k]) + (", ..." if len(ids) > k else "") + "]"


def evaluate_gate(
    baseline: Baseline,
    new: Baseline,
    specs: Sequence[GateSpec] = DEFAULT_GATES,
    *,
    alpha: float = 0.05,
    seed: int = 0,
) -> GateVerdict:
    """Compare ``new`` against ``baseline`` on ``specs`` (see the module docstring)."""
    if not 0 < alpha < 1:
        raise HarnessError(f"--alpha must be between 0 and 1, got {alpha}")
    check_seed(seed)
    if not specs:
        raise HarnessError("no metric to gate: give at least one --max-drop METRIC=MARGIN")
    check_compatible(baseline, new)
    # A metric the design leaves undefined for every query is skipped (with a note), so the
    # Holm family and Holm's strictest level count only the tests actually run: neither its
    # sign-flip nor its order-noise test is in the family.
    skipped = [spec for spec in specs if _undefined_everywhere(baseline, new, spec.metric)]
    tested = [spec for spec in specs if spec not in skipped]
    if not tested:
        why = "; ".join(
            f"{spec.metric}: {', '.join(_by_design(baseline, new, spec.metric))}" for spec in specs
        )
        raise HarnessError(
            f"nothing to gate: every gated metric is undefined for this design ({why}); "
            "gate another metric with --max-drop"
        )
    pairs = [_pair(baseline, new, spec) for spec in specs]
    counted = [pair for pair in pairs if pair.spec not in skipped]
    tests = len(counted) + sum(pair.spreads is not None for pair in counted)
    rows = [_metric_verdict(pair, alpha, alpha / tests, seed) for pair in pairs]
    metrics = _holm_across_tests(rows)
    # A declared invariance is a contract: a baseline that declared it keeps it enforced even
    # when the new run's preset stops declaring it (which would otherwise switch the check off).
    declared = new.order_invariant or baseline.order_invariant
    invariance = _invariance(new) if declared else None
    notes = []
    if baseline.order_invariant and not new.order_invariant:
        notes.append(
            "the baseline's reranker declared order invariance and this run's does not: "
            "invariance is still enforced (record a new baseline to drop the contract)"
        )
    if baseline.reranker.get("name") != new.reranker.get("name"):
        notes.append(
            f"reranker changed: {baseline.reranker.get('name')} -> {new.reranker.get('name')}"
        )
    if baseline.model != new.model:
        notes.append("model identity differs from the baseline's")
    if baseline.prompt_hash != new.prompt_hash:
        notes.append("prompt hash differs from the baseline's")
    for side, other, name in ((baseline, new, "baseline"), (new, baseline, "run")):
        if side.invalid_share is None and other.invalid_share:
            notes.append(
                f"the {name} records no invalid share (recorded before invalid answers were; "
                "such an answer then stopped the run): read as 0"
            )
    validity = ValidityVerdict(baseline.invalid_share or 0.0, new.invalid_share or 0.0)
    for row in metrics:
        why = "; ".join(row.by_design)
        if row.skipped:
            notes.append(
                f"{row.spec.metric} skipped: undefined for every query ({why}); it is not "
                "tested, and it does not pass on a number"
            )
        elif row.by_design and row.n < row.n_total:
            notes.append(
                f"{row.spec.metric}: {row.n_total - row.n} queries left out, undefined ({why})"
            )
    return GateVerdict(baseline, new, metrics, invariance, alpha, tuple(notes), validity)


def _by_design(baseline: Baseline, new: Baseline, metric: str) -> Mapping[str, int]:
    """Why the design leaves ``metric`` undefined (``{reason: queries}``): the new run's
    reasons, else the baseline's; empty when neither names one."""
    return new.undefined.get(metric) or baseline.undefined.get(metric) or {}


def _undefined_everywhere(baseline: Baseline, new: Baseline, metric: str) -> bool:
    """Whether the design leaves ``metric`` undefined for every query of the comparison: a
    reason is recorded and no query has a value in both runs."""
    if not _by_design(baseline, new, metric):
        return False
    old_values, new_values = baseline.vector(metric), new.vector(metric)
    return all(math.isnan(old_values[q]) or math.isnan(new_values[q]) for q in baseline.query_ids)


@dataclass(frozen=True)
class _Pair:
    """One metric's values over the queries defined in both runs, and what the order-noise
    test needs: each query's spread across orders in both runs (or why it is missing)."""

    spec: GateSpec
    old: np.ndarray
    new: np.ndarray
    n_total: int
    newly_undefined: int
    by_design: Mapping[str, int] = field(default_factory=dict)
    orders: int | np.ndarray = 0  # per query where they differ (adaptive sampling)
    spreads: tuple[np.ndarray, np.ndarray] | None = None  # (new, baseline)
    noise_note: str = ""


def _pair(baseline: Baseline, new: Baseline, spec: GateSpec) -> _Pair:
    old_values, new_values = baseline.vector(spec.metric), new.vector(spec.metric)
    queries = baseline.query_ids
    b = np.array([old_values[q] for q in queries])
    w = np.array([new_values[q] for q in queries])
    by_design = dict(_by_design(baseline, new, spec.metric))
    # Undefined in the new run by its design (the run records why) is no regression, even
    # where a baseline from before undefined values were named holds a number there.
    explained = bool(new.undefined.get(spec.metric))
    newly_undefined = 0 if explained else int(np.sum(~np.isnan(b) & np.isnan(w)))
    keep = ~(np.isnan(b) | np.isnan(w))
    pair = _Pair(spec, b[keep], w[keep], len(queries), newly_undefined, by_design)
    perms = baseline.permutations  # equal to the run's: check_compatible
    spread = ORDER_SPREAD.get(spec.metric)
    if spread is None:
        return replace(pair, noise_note="no spread across orders recorded for this metric")
    if perms.get("strategy") != "random" or int(perms.get("random_orders") or 0) < 2:
        return replace(pair, noise_note="needs --strategy random with --perms 2 or more")
    if spread not in baseline.per_query or spread not in new.per_query:
        return replace(pair, noise_note=f"{spread} not recorded in both runs")
    old_spread, new_spread = baseline.vector(spread), new.vector(spread)
    spreads = (
        np.array([new_spread[q] for q in queries])[keep],
        np.array([old_spread[q] for q in queries])[keep],
    )
    if any(np.isnan(s).any() for s in spreads):
        return replace(pair, noise_note=f"{spread} undefined for some queries")
    orders: int | np.ndarray = int(perms["random_orders"])
    if registry.N_ORDERS in baseline.per_query and registry.N_ORDERS in new.per_query:
        old_n, new_n = baseline.vector(registry.N_ORDERS), new.vector(registry.N_ORDERS)
        orders = np.array([min(old_n[q], new_n[q]) for q in queries])[keep]
    return replace(pair, orders=orders, spreads=spreads)


def _metric_verdict(pair: _Pair, alpha: float, test_alpha: float, seed: int) -> MetricVerdict:
    """One metric's paired comparison over the queries where it is defined in both runs;
    the Holm-adjusted p-values are filled in once all metrics are tested. ``test_alpha``
    (alpha over the number of tests, Holm's strictest step) sizes the detectable drop."""
    spec, b, w = pair.spec, pair.old, pair.new
    nan = math.nan
    if b.size == 0:
        return MetricVerdict(
            spec, 0, nan, nan, nan, (nan, nan), 1.0, nan, alpha, pair.n_total,
            pair.newly_undefined, noise_note="undefined for every query", by_design=pair.by_design,
        )  # fmt: skip
    diff = w - b
    oriented = diff if spec.higher_is_better else -diff
    p = sign_flip_pvalue(oriented + spec.margin, alternative="less", seed=seed)
    mean, low, high = paired_difference_ci(diff, seed=seed)
    detectable = detectable_drop(diff, margin=spec.margin, alpha=test_alpha)
    noise = OrderNoiseTest(nan, nan, nan)
    if pair.spreads is not None:
        noise = order_noise_test(oriented, *pair.spreads, orders=pair.orders, margin=spec.margin)
        noise_detects = order_noise_detectable(noise, margin=spec.margin, alpha=test_alpha)
        detectable = min(detectable, noise_detects)
    return MetricVerdict(
        spec, int(b.size), float(b.mean()), float(w.mean()), mean, (low, high), p, nan,
        alpha, pair.n_total, pair.newly_undefined, detectable, noise_p=noise.p,
        noise_se=noise.se, noise_note=pair.noise_note, by_design=pair.by_design,
    )  # fmt: skip


def _holm_across_tests(rows: Sequence[MetricVerdict]) -> tuple[MetricVerdict, ...]:
    """Holm over every p-value of the gate, sign-flip and order-noise alike, so the family-wise
    error stays at alpha however many tests each metric gets. A skipped metric (undefined by
    the design for every query) runs no test: it is left out of the family, its p-values NaN."""
    tested = [i for i, row in enumerate(rows) if not row.skipped]
    noisy = [i for i in tested if not math.isnan(rows[i].noise_p)]
    adjusted = holm([rows[i].p_value for i in tested] + [rows[i].noise_p for i in noisy])
    sign_holm = dict(zip(tested, adjusted[: len(tested)], strict=True))
    noise_holm = dict(zip(noisy, adjusted[len(tested) :], strict=True))
    return tuple(
        replace(
            row,
            p_holm=float(sign_holm.get(i, math.nan)),
            noise_p_holm=float(noise_holm.get(i, math.nan)),
        )
        for i, row in enumerate(rows)
    )


def _invariance(new: Baseline) -> InvarianceVerdict:
    """A query violates invariance if its orders gave more than one distinct ranking (an
    exact check over every order, the reference included) or, for runs recorded before that
    count existed, if its mean pairwise tau falls below 1 - tolerance."""
    taus = new.vector(registry.KENDALL_TAU)
    distinct = new.per_query.get(registry.DISTINCT_RANKINGS)
    counts = dict(zip(new.query_ids, distinct, strict=True)) if distinct else {}
    bad = tuple(
        (q, tau)
        for q, tau in taus.items()
        if counts.get(q, 1) > 1 or (not math.isnan(tau) and tau < 1 - INVARIANCE_TOLERANCE)
    )
    defined = [tau for tau in taus.values() if not math.isnan(tau)]
    return InvarianceVerdict(violations=bad, min_tau=min(defined, default=math.nan))


def _orders_shown(run: Baseline) -> str:
    """The random orders each query was shown: ``20``, or ``3 to 20`` per query where they
    differ (an adaptive run stops each query when its target is met, ``--perms`` the most)."""
    counts = [n for n in run.per_query.get(registry.N_ORDERS, ()) if not math.isnan(n)]
    if run.permutations.get("strategy") != "random" or not counts:
        return f"{run.permutations.get('random_orders')}"
    if min(counts) == max(counts):
        return f"{int(counts[0])}"
    return f"{int(min(counts))} to {int(max(counts))} (per query)"


def render_verdict(verdict: GateVerdict, *, run_label: str, baseline_label: str) -> str:
    """The verdict as Markdown: a header, one row per gated metric, and the decision."""
    new, base = verdict.new, verdict.baseline
    perms = new.permutations
    lines = [
        f"### Gate: {run_label} vs baseline {baseline_label}",
        "",
        f"{new.reranker.get('name')} vs {base.reranker.get('name')} on "
        f"{new.dataset.get('name')} ({len(new.query_ids)} queries, depth "
        f"{new.dataset.get('depth') or 'all'}, strategy {perms.get('strategy')}, "
        f"{_orders_shown(new)} random orders, seed {perms.get('seed')}). "
        "Per metric, two one-sided tests of H0 'mean drop <= margin': a paired sign-flip test "
        "over queries and, where each query's spread across orders is recorded, an "
        "order-noise test on these queries (is the drop beyond the margin by more than the "
        "orders drawn can explain?); "
        f"Holm-adjusted across all {_tests(verdict)} tests, alpha {verdict.alpha:g}; plus a "
        "hard floor on the mean drop. 'Detects' is the true mean drop a test finds with 80% "
        "power at Holm's strictest level, given this comparison's noise; smaller drops pass "
        "unless they exceed the floor.",
        "",
        _row("metric", "queries", "baseline", "new", "difference [95% CI]",
             "p sign-flip (Holm)", "p order-noise (Holm)", "margin", "floor", "detects",
             "verdict"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    for m in verdict.metrics:
        arrow = "↑" if m.spec.higher_is_better else "↓"
        interval = f"[{_f(m.ci95[0], signed=True)}, {_f(m.ci95[1], signed=True)}]"
        counted = f"{m.n}" if m.n == m.n_total else f"{m.n} of {m.n_total} defined"
        name = m.spec.metrics.label(m.spec.metric, new.relevance_level)
        lines.append(
            _row(f"{name} {arrow}", counted, _f(m.baseline_mean), _f(m.new_mean),
                 f"{_f(m.diff, signed=True)} {interval}", f"{_p(m.p_value)} ({_p(m.p_holm)})",
                 _noise(m), f"{m.spec.margin:g}", f"{m.spec.floor:g}", _detects(m),
                 _bold_if(not m.passed, m.reason))
        )  # fmt: skip
    if verdict.invariance is not None:
        bad = verdict.invariance.violations
        moved = f"FAIL: {len(bad)} queries moved {_few([q for q, _ in bad])}"
        lines.append(
            _row("order invariance (declared): min Kendall tau", str(len(new.query_ids)), "n/a",
                 _f(verdict.invariance.min_tau), "", "", "",
                 f"1 ranking per query, tau >= 1 - {INVARIANCE_TOLERANCE:g}", "", "",
                 _bold_if(bool(bad), moved if bad else "pass"))
        )  # fmt: skip
    valid = verdict.validity
    lines.append(
        _row(f"{registry.INVALID_SHARE} ↓ (validity)", "", _f(valid.baseline_share),
             _f(valid.new_share), _f(valid.new_share - valid.baseline_share, signed=True), "",
             "", valid.rule, "", "", _bold_if(not valid.passed, valid.reason))
    )  # fmt: skip
    if verdict.notes:
        lines += ["", *(f"- note: {n}" for n in verdict.notes)]
    lines += ["", f"**{'PASS' if verdict.passed else 'FAIL'}**"]
    return "\n".join(lines) + "\n"


def _tests(verdict: GateVerdict) -> int:
    """Tests in the Holm family: skipped metrics run none."""
    return sum(1 + (not math.isnan(m.noise_p)) for m in verdict.metrics if not m.skipped)


def _noise(m: MetricVerdict) -> str:
    """``0.0021 (0.0084)``, or ``n/a`` where the order-noise test does not apply."""
    return "n/a" if math.isnan(m.noise_p) else f"{_p(m.noise_p)} ({_p(m.noise_p_holm)})"


def _detects(m: MetricVerdict) -> str:
    """``0.0312`` or, where no outcome can be significant, only the floor."""
    if m.n == 0:
        return "n/a"
    if math.isinf(m.detectable):
        return f"floor only ({m.n} queries)"
    return _f(min(m.detectable, m.spec.floor))


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _bold_if(condition: bool, text: str) -> str:
    return f"**{text}**" if condition else text


def _f(value: float, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _p(value: float) -> str:
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"
