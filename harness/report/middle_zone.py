"""The "middle zone" of score-based rerankers (ICR, HeadRank's "homogenized middle").

Attention rerankers tend to give candidates shown in the middle of a long context
near-identical scores, so their order there is decided by noise. Two views from a run's
samples, for order-sensitive rerankers that recorded scores:

* exposure by input position (from ``results.json``), with the middle third shaded;
* score spread per zone: within each shown order, the standard deviation of the scores of
  the candidates shown in the first, middle and last third of the positions, divided by the
  standard deviation of all its scores (1 = as spread as the whole list, near 0 =
  homogenized), averaged over orders.

Pure functions of a :class:`~harness.report.load.RunData`, plus one plot.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from harness.metrics.registry import TOP_K
from harness.report.load import RunData
from harness.report.plots import Rendered

ZONES = ("first", "middle", "last")


@dataclass(frozen=True)
class MiddleZone:
    """One run's middle-zone series, over its orders of the most common length ``n``."""

    n: int
    exposure: np.ndarray  # [n] top-k share by input position (empty when not recorded)
    expected: np.ndarray  # [n] no-bias share
    spread: Mapping[str, float]  # zone -> mean relative score spread
    orders: int  # orders with scores behind ``spread``

    def to_dict(self) -> dict[str, object]:
        return {
            "n": self.n,
            "zone_score_spread": {k: round(v, 6) for k, v in self.spread.items()},
            "orders": self.orders,
        }


def zone_bounds(n: int) -> tuple[tuple[int, int], ...]:
    """[start, end) of the first, middle and last third of ``n`` positions (the middle one
    takes the remainder, so a list of 20 splits 6 / 8 / 6)."""
    edge = n // 3
    return ((0, edge), (edge, n - edge), (n - edge, n))


def middle_zone(run: RunData) -> MiddleZone | None:
    """None when the run recorded no scores (generative rerankers), has under 3 candidates, or
    is declared order-invariant (its scores cannot depend on where a candidate is shown)."""
    if run.results.reranker.order_invariant:
        return None
    # two streaming passes (the run's samples are never all in memory): the common list
    # length, then each scored order's spread per zone
    lengths = Counter(len(s.shown) for s in run.samples if s.scores)
    if not lengths:
        return None
    n = lengths.most_common(1)[0][0]
    if n < 3:
        return None
    spreads: dict[str, list[float]] = {zone: [] for zone in ZONES}
    for sample in run.samples:
        if not sample.scores or len(sample.shown) != n:
            continue
        doc_ids = run.queries[sample.query_id].doc_ids
        values = np.array([sample.scores[doc_ids[i]] for i in sample.shown], dtype=float)
        total = values.std()
        if not total > 0:
            continue
        for zone, (start, end) in zip(ZONES, zone_bounds(n), strict=True):
            spreads[zone].append(float(values[start:end].std() / total))
    if not spreads["middle"]:
        return None
    bias = run.results.position_bias
    exposure = np.asarray(bias.get(f"exposure_top{TOP_K}") or [], dtype=float)
    expected = np.asarray(bias.get(f"expected_top{TOP_K}") or [], dtype=float)
    return MiddleZone(
        n=n,
        exposure=exposure,
        expected=expected,
        spread={zone: float(np.mean(v)) for zone, v in spreads.items()},
        orders=len(spreads["middle"]),
    )


def plot_middle_zone(zones: Mapping[str, MiddleZone]) -> Rendered:
    """(a) top-k exposure by input position, middle third shaded; (b) score spread per
    zone, one bar group per run."""
    from harness.report.plots import paper

    return paper(_draw_middle_zone)(zones)


def _draw_middle_zone(zones: Mapping[str, MiddleZone]):
    from harness.report.plots import TWO_COLUMNS, _figure, _style

    fig, (left, right) = _figure(TWO_COLUMNS, 2.8, ncols=2)
    width = 0.8 / max(len(zones), 1)
    for i, (label, zone) in enumerate(zones.items()):
        style = _style(i)
        if zone.exposure.size:
            positions = np.arange(1, zone.exposure.size + 1)
            left.plot(
                positions,
                zone.exposure,
                color=style["color"],
                marker=style["marker"],
                linestyle=style["linestyle"],
                label=label,
            )
        heights = [zone.spread[z] for z in ZONES]
        right.bar(
            np.arange(3) + i * width,
            heights,
            width,
            color=style["color"],
            hatch=style["hatch"],
            edgecolor="black",
            label=label,
        )
    first = next(iter(zones.values()))
    start, end = zone_bounds(first.n)[1]
    left.axvspan(start + 0.5, end + 0.5, color="0.9", zorder=0, label="middle third")
    if first.expected.size:
        left.plot(np.arange(1, first.expected.size + 1), first.expected, "k:", label="no bias")
    left.set_xlabel("input position (1 = shown first)")
    left.set_ylabel(f"share reaching the top {TOP_K}")
    left.set_title("(a) exposure by input position")
    left.legend()
    right.set_xticks(np.arange(3) + width * (len(zones) - 1) / 2, [f"{z} third" for z in ZONES])
    right.set_ylabel("score std in zone / std of all scores")
    right.set_title("(b) score spread by zone (low = homogenized)")
    right.legend()
    return fig
