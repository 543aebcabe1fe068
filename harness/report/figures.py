"""The report's figures: plot series derived from the runs, rendered by ``plots``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from harness.metrics import registry
from harness.metrics.registry import KENDALL_TAU, NDCG, NDCG_RANGE, RBO, TOP_K
from harness.report import plots, series
from harness.report.document import Figure
from harness.report.load import RunData
from harness.report.middle_zone import middle_zone, plot_middle_zone

CAPTIONS: Mapping[str, tuple[str, str]] = {
    "ndcg_across_orders": (
        f"NDCG@{TOP_K} across input orders",
        f"(a) Each point is one shown order's NDCG@{TOP_K} averaged over queries; the star is "
        f"the identity (first-stage) order. (b) Each point is one query's NDCG@{TOP_K} range "
        "across its orders. An order-invariant reranker has a single value and zero spread.",
    ),
    "stability_ecdf": (
        "Per-query stability (ECDF)",
        f"Share of queries whose mean pairwise Kendall tau (a) / RBO@{TOP_K} (b) across orders "
        "is at or below x. Curves hugging the right edge (1.0) mean identical outputs in every "
        "order. "
        "The shaded band around each curve is its 95% Dvoretzky-Kiefer-Wolfowitz band (wide "
        "with few queries): curves inside each other's bands are not shown to differ.",
    ),
    "rank_given_position": (
        "P(output rank | input position)",
        "Row i: where the item shown at position i ends up (pooled over queries of the most "
        "common length). A diagonal means the output copies the input order; an "
        "order-invariant reranker under random orders gives a flat (uniform) matrix.",
    ),
    "exposure": (
        "Marginal exposure by input position",
        f"Share of outputs in which the item shown at each input position reaches the top {TOP_K}, "
        "against the share with no position bias (dotted black, k/n). The shaded band is where "
        "a reranker with no position bias lands 95% of the time under these random orders "
        "(binomial in the number of outputs); a point outside it is more than noise.",
    ),
    "middle_zone": (
        "Middle zone (order-sensitive score-based rerankers)",
        f"(a) Share of outputs in which the item shown at each input position reaches the top "
        f"{TOP_K}, the middle third of the positions shaded. (b) Within each order, the "
        "spread (std) of the scores of the items shown in the first, middle and last third, "
        "relative to the spread of all its scores; a low middle bar is the 'homogenized "
        "middle' attention rerankers are known for.",
    ),
    "lost_in_the_middle": (
        "Lost in the middle (sweep)",
        "Each judged-relevant candidate is moved through every input position with the others "
        "kept in first-stage order. (a) Its mean output rank; (b) "
        f"NDCG@{TOP_K} of the output.",
    ),
    "latency": (
        "Latency per order",
        "Wall time of each reranker call divided by the orders it served, in milliseconds.",
    ),
    "stability_vs_effectiveness": (
        "Stability vs effectiveness",
        "One point per run with 95% bootstrap intervals over queries: right is more stable "
        "across orders, up is more effective.",
    ),
}


def _figure(key: str, image: plots.Rendered) -> Figure:
    title, caption = CAPTIONS[key]
    return from_rendered(key, title, caption, image)


def from_rendered(key: str, title: str, caption: str, image: plots.Rendered) -> Figure:
    return Figure(key, title, caption, image.png, image.svg, image.pdf, image.width_in)


def build_figures(runs: Sequence[RunData]) -> tuple[list[Figure], list[str], dict[str, Any]]:
    """Every plot the runs support, notes on those left out, and the series behind them."""
    notes: list[str] = []
    data: dict[str, Any] = {r.label: {} for r in runs}
    per_order, reference = {}, {}
    for r in runs:
        orders = series.order_ndcg(r)
        per_order[r.label], reference[r.label] = orders.values, orders.reference
        data[r.label][f"{NDCG}_per_order"] = orders.values
    spread = {r.label: list(r.per_query(NDCG_RANGE).values()) for r in runs}
    tau = {r.label: list(r.per_query(KENDALL_TAU).values()) for r in runs}
    rbo = {r.label: list(r.per_query(RBO).values()) for r in runs}
    figures = [
        _figure("ndcg_across_orders", plots.ndcg_across_orders(per_order, reference, spread)),
        _figure("stability_ecdf", plots.stability_ecdf(tau, rbo)),
    ]
    matrices = {
        r.label: matrix for r in runs if (matrix := r.results.rank_given_position()) is not None
    }
    if matrices:
        figures.append(_figure("rank_given_position", plots.rank_heatmaps(matrices)))
    bias = {r.label: r.results.position_bias for r in runs}
    exposure = {k: v.get(f"exposure_top{TOP_K}") or [] for k, v in bias.items()}
    expected = {k: v.get(f"expected_top{TOP_K}") or [] for k, v in bias.items()}
    if any(exposure.values()):
        bands = exposure_bands(runs)
        figures.append(
            _figure("exposure", plots.exposure_by_position(exposure, expected, bands=bands))
        )
    zones = {r.label: z for r in runs if (z := middle_zone(r)) is not None}
    if zones:
        figures.append(_figure("middle_zone", plot_middle_zone(zones)))
        for label, zone in zones.items():
            data[label]["middle_zone"] = zone.to_dict()
    curves = {}
    for r in runs:
        curve = series.sweep_curve(r)
        if curve is not None:
            curves[r.label] = data[r.label]["sweep"] = curve
        elif r.strategy == "sweep":
            notes.append(f"{r.label}: sweep curve left out (no sweep orders).")
    if curves:
        figures.append(_figure("lost_in_the_middle", plots.lost_in_the_middle(curves)))
    elif not any(r.strategy == "sweep" for r in runs):
        notes.append("The lost-in-the-middle curve needs a run with --strategy sweep.")
    latencies = {r.label: series.latencies_ms(r) for r in runs}
    points = {r.label: series.run_point(r) for r in runs}
    figures.append(_figure("latency", plots.latency_per_run(latencies)))
    figures.append(_figure("stability_vs_effectiveness", plots.stability_vs_effectiveness(points)))
    return figures, notes, data


def exposure_bands(runs: Sequence[RunData]) -> dict[str, tuple[list[float], list[float]]]:
    """Each random-design run's no-bias 95% band of the exposure share, by input position
    (balanced designs such as cyclic have no sampling noise, so no band)."""
    from harness.metrics.position_bias import no_bias_band

    bands = {}
    for r in runs:
        bias = r.results.position_bias
        entry = r.results.summary.get(registry.POSITION_BIAS_MAD)
        trials, expected = bias.get("trials"), bias.get(f"expected_top{TOP_K}")
        if entry is None or entry.no_bias_floor is None or not trials or not expected:
            continue
        expected_values = np.array([np.nan if e is None else e for e in expected], dtype=float)
        low, high = no_bias_band(np.asarray(trials), expected_values)
        bands[r.label] = (low.tolist(), high.tolist())
    return bands
