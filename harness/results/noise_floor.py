"""The noise floor of ``--repeats R``: each stability metric measured again under NO change of
order, over as many same-order outputs as the design compares, and a paired test of whether
the instability measured across orders exceeds it.

The floor group of a query is order 0 (the identity order) and its R reruns: the same order
shown R + 1 times. Each metric's floor is its own kernel (``MetricSpec.kernel``) on views of
the query's outputs, as its spec's ``floor`` kind says (``registry.FloorKind``). Like with
like:

* Means over pairs of outputs (``kendall_tau``, ``rbo@10``, ``top1_agreement``,
  ``top10_jaccard``, ``spearman``, ``top10_set_agreement``) estimate the same quantity from
  any number of outputs, so the floor is the mean over every pair of reruns and the design's
  value is its own per-query value.
* Quantities that grow with the number of outputs (``ppi``, ``gpi``, ``distinct_rankings``,
  ``ndcg@10_std``, ``ndcg@10_range``, ``best_relevant_rank_var``) are computed on matched
  blocks: m = min(design outputs, floor outputs), the larger side cut into consecutive blocks
  of m (a remainder, and blocks past ``MAX_BLOCKS``, are left out) and its values averaged
  over blocks. The floor's PPI groups
  the reruns into the cells the design's shown orders give (rerun j takes the cells of the
  block's j-th shown order), so it is the PPI an order-independent reranker with this
  reranker's own variability would show under this design.

The verdict is a paired, one-sided test over queries of "the design is no more unstable than
the floor": per query the excess instability (design minus floor, oriented so that positive
is less stable), a seeded sign-flip test, Holm across the floor's metrics, and a bootstrap 95%
interval of the mean excess. "Outside" = the Holm-adjusted p is below ``FLOOR_ALPHA``. When
every query's reruns gave one and the same ranking (a deterministic reranker), the floor is
exact invariance and the test is exact: any mean excess is order sensitivity (p = 0), none is
p = 1 (the order-noise test of the gate does the same with no spread).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.errors import HarnessError
from harness.metrics import registry
from harness.metrics.bootstrap import bootstrap_mean_ci
from harness.metrics.orders import Sample
from harness.metrics.paired import EXACT_TOLERANCE, holm, paired_difference_ci, sign_flip_pvalue
from harness.metrics.registry import MetricRegistry, MetricSpec
from harness.metrics.stability import nan_stat
from harness.results.schema import FLOOR_METHOD
from harness.results.tables import PerQueryTable

if TYPE_CHECKING:
    from harness.metrics.orders import QueryOrders

FLOOR_ALPHA = 0.05
"""Family-wise level of the floor's verdicts (Holm across its metrics)."""

SCORE_SPREAD = "score_spread"
"""Floor only: the largest change of any candidate's score over the reruns (no verdict)."""

DESIGN = "design:"
"""Per-query columns ``design:<metric>``: the design's value the floor is compared with."""

MATCHED_ORDERS = "matched_orders"
"""Per-query column: m, the outputs each side's blocks hold."""

IDENTICAL = "identical_reruns"
"""Per-query column: 1 when every rerun gave the same ranking, else 0."""

MAX_BLOCKS = 4
"""Blocks a side's matched value averages at most: more only lower its variance, and each
costs a GPI (an exact Kemeny solve, ~0.3 s at 20 candidates)."""

_OVER_COMPARED = ("blocks in design cells", "blocks")  # blocks of what pairwise metrics read


def query_floor(
    orders: QueryOrders,
    design_values: Mapping[str, float],
    metrics: MetricRegistry = registry.BUILTIN,
) -> dict[str, float] | None:
    """One query's floor and matched design values (columns: each floor metric of
    ``metrics``, ``design:`` each, ``score_spread``, ``matched_orders``,
    ``identical_reruns``); None without repeats.

    ``orders``: the query's outputs by order index; ``design_values`` the summary's per-query
    values (which already leave undefined ones NaN). Each metric's floor is its kernel on
    views of ``orders`` (the reruns, matched blocks), as its spec's ``floor`` says."""
    samples = orders.samples
    floor = [i for i, s in enumerate(samples) if s.order_index == 0 or s.label.is_repeat]
    if len(floor) < 2 or samples[floor[0]].order_index != 0:
        return None
    specs = metrics.with_floor()
    pairs = [spec for spec in specs if spec.floor == "pairs"]
    reruns = orders.view(floor)
    values = {spec.name: _kernel(spec)(reruns) for spec in pairs}
    for spec in pairs:
        values[DESIGN + spec.name] = design_values[spec.name]
        if np.isnan(design_values[spec.name]):  # undefined by design: undefined in the floor too
            values[spec.name] = float("nan")
    # the outputs the pairwise metrics compare, or the design's orders, against the reruns
    sides = {
        _OVER_COMPARED: _matched(list(orders.compared), floor),
        ("design blocks",): _matched(list(orders.design), floor),
    }
    for kinds, (blocks, floor_blocks) in sides.items():
        for spec in specs:
            if spec.floor in kinds:
                values.update(_blocked(spec, orders, blocks, floor_blocks, design_values))
    blocks = sides[_OVER_COMPARED][0]
    values[SCORE_SPREAD] = _score_spread([samples[i] for i in floor])
    values[MATCHED_ORDERS] = len(blocks[0]) if blocks else 0
    values[IDENTICAL] = float(len({samples[i].ranking for i in floor}) == 1)
    return values


def _kernel(spec: MetricSpec):
    if spec.kernel is None:
        raise HarnessError(
            f"metric {spec.name!r} has no kernel: its noise floor cannot be measured"
        )
    return spec.kernel


def _matched(design: list[int], floor: list[int]) -> tuple[list[list[int]], list[list[int]]]:
    """Both sides cut into consecutive blocks of m = min(sizes) rows (none when m < 2)."""
    m = min(len(design), len(floor))
    if m < 2:
        return [], []
    return _split(design, m), _split(floor, m)


def _split(rows: list[int], m: int) -> list[list[int]]:
    """The first ``MAX_BLOCKS`` consecutive blocks of ``m`` rows."""
    return [rows[k : k + m] for k in range(0, len(rows) - m + 1, m)][:MAX_BLOCKS]


def _blocked(
    spec: MetricSpec,
    orders: QueryOrders,
    blocks: list[list[int]],
    floor_blocks: list[list[int]],
    design_values: Mapping[str, float],
) -> dict[str, float]:
    """``name`` and ``design:name``: the kernel averaged over each side's blocks (for
    ``blocks in design cells``, each rerun block read in each design block's cells); NaN
    both when the design leaves the metric undefined or a side has fewer than two outputs."""
    name = spec.name
    if not blocks or np.isnan(design_values.get(name, np.nan)):
        return {name: float("nan"), DESIGN + name: float("nan")}
    kernel = _kernel(spec)
    design = [kernel(orders.view(d)) for d in blocks]
    if spec.floor == "blocks in design cells":
        floor = [kernel(orders.view(f, cells=d)) for d in blocks for f in floor_blocks]
    else:
        floor = [kernel(orders.view(f)) for f in floor_blocks]
    return {
        name: nan_stat(np.mean, np.array(floor, dtype=float)),
        DESIGN + name: nan_stat(np.mean, np.array(design, dtype=float)),
    }


def _score_spread(group: list[Sample]) -> float:
    """max over candidates of (max - min) of its score across the group; NaN without scores."""
    if any(not s.scores for s in group):
        return float("nan")
    ids = list(group[0].scores or {})
    matrix = np.array([[float((s.scores or {})[d]) for d in ids] for s in group])
    return float((matrix.max(axis=0) - matrix.min(axis=0)).max()) if ids else float("nan")


def floor_section(
    floors: PerQueryTable, repeats: int, seed: int, metrics: MetricRegistry = registry.BUILTIN
) -> dict[str, Any]:
    """The run's ``noise_floor``: per metric the floor's mean over queries with its bootstrap
    95% interval, the design's matched mean, the mean excess with its interval, the one-sided
    sign-flip p (``p``) and Holm-adjusted across the metrics (``p_holm``), and ``within_floor``
    (p_holm >= ``FLOOR_ALPHA``); ``score_spread`` has only its value and interval."""
    identical = floors.column(IDENTICAL)
    exact = bool(np.all(identical == 1))
    entries: dict[str, Any] = {}
    for spec in metrics.with_floor():
        entries[spec.name] = _entry(floors, spec, exact, seed)
    mean, low, high = bootstrap_mean_ci(floors.column(SCORE_SPREAD), seed=seed)
    spread = floors.column(SCORE_SPREAD)
    entries[SCORE_SPREAD] = {
        "value": mean, "ci95": [low, high], "n": int((~np.isnan(spread)).sum()),
    }  # fmt: skip
    tested = [name for name, entry in entries.items() if "p" in entry]
    for name, adjusted in zip(tested, holm([entries[n]["p"] for n in tested]), strict=True):
        entries[name]["p_holm"] = float(adjusted)
        entries[name]["within_floor"] = bool(adjusted >= FLOOR_ALPHA)
    orders = floors.column(MATCHED_ORDERS)
    orders = orders[orders > 0]
    return {
        "repeats": int(repeats),
        "method": FLOOR_METHOD,  # sections without it predate the test
        "alpha": FLOOR_ALPHA,
        "exact": exact,
        "matched_orders": [int(orders.min()), int(orders.max())] if orders.size else None,
        "summary": entries,
        "per_query": floors,
    }


def _entry(floors: PerQueryTable, spec: MetricSpec, exact: bool, seed: int) -> dict[str, Any]:
    floor = floors.column(spec.name)
    design = floors.column(DESIGN + spec.name)
    mean, low, high = bootstrap_mean_ci(floor, seed=seed)
    entry: dict[str, Any] = {"value": mean, "ci95": [low, high], "n": int((~np.isnan(floor)).sum())}
    paired = ~(np.isnan(floor) | np.isnan(design))
    if not paired.any():
        return entry
    # positive = less stable across orders than under no change of order
    excess = (floor - design if spec.higher_is_better else design - floor)[paired]
    excess_mean, excess_low, excess_high = paired_difference_ci(excess, seed=seed)
    if exact:
        p = 0.0 if excess_mean > EXACT_TOLERANCE else 1.0
    else:
        p = sign_flip_pvalue(excess, alternative="greater", seed=seed)
    return entry | {
        "design": float(design[paired].mean()),
        "excess": excess_mean,
        "excess_ci95": [excess_low, excess_high],
        "n_paired": int(paired.sum()),
        "p": p,
    }
