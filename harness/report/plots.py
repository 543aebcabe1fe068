"""The report's plots: small pure functions from plain series to images (PNG, SVG, PDF).

matplotlib is imported inside each call and only its object API is used (``Figure``, never
``pyplot``); the paper style applies through ``rc_context`` for the call only, and the Agg
renderer needs no display. Runs are told apart by marker, line style and hatch as well as
colour, so a grey-scale print stays readable. Figures carry no title: the report's caption
(and a paper's) says what they show; panels of a figure are lettered (a), (b).

Sizes are for print: a one-panel figure is one column wide (3.5 in), a two-panel figure
spans two columns (7 in), with 8-9 pt text, so it can go into a paper without rescaling.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.metrics.registry import TOP_K
from harness.report.series import RunPoint, SweepCurve

# Okabe-Ito colours (colour-blind safe), each paired with a marker, dash and hatch.
_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_LINES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3)))
_HATCHES = ("//", "..", "xx", "\\\\", "oo", "++", "--")
DPI = 200  # PNG resolution: a 3.5 in column is 700 px
ONE_COLUMN = 3.5  # inches: one column of a two-column paper
TWO_COLUMNS = 7.0
PAPER_STYLE: Mapping[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "axes.linewidth": 0.6,
    "pdf.fonttype": 42,  # TrueType in the PDF: editable text, accepted by publishers
    "svg.fonttype": "none",  # text stays text in the SVG (smaller, searchable)
    "svg.hashsalt": "harness",  # stable element ids: the same data gives the same SVG
}


@dataclass(frozen=True)
class Rendered:
    """One figure in the three formats the report writes: PNG for the Markdown comment,
    SVG for the HTML page and papers, PDF for LaTeX."""

    png: bytes
    svg: bytes
    pdf: bytes
    width_in: float = ONE_COLUMN


def paper(draw: Callable[..., Any]) -> Callable[..., Rendered]:
    """Run a function that draws and returns a matplotlib ``Figure`` in the paper style and
    render it; the style is matplotlib's only for the call."""

    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> Rendered:
        from matplotlib import rc_context

        with rc_context(PAPER_STYLE):  # type: ignore[arg-type]  # stubs: only literal rc keys
            fig = draw(*args, **kwargs)
            return Rendered(
                _save(fig, "png"), _save(fig, "svg"), _save(fig, "pdf"), float(fig.get_figwidth())
            )

    return wrapper


def _style(i: int) -> dict[str, Any]:
    j = i % len(_COLOURS)
    return {
        "color": _COLOURS[j],
        "marker": _MARKERS[j],
        "linestyle": _LINES[j],
        "hatch": _HATCHES[j],
    }


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes.ravel()


def _save(fig, fmt: str) -> bytes:
    """The figure as ``fmt`` bytes, without dates or versions, so a rebuild is identical."""
    metadata: dict[str, Any] = {
        "png": {"Software": None},
        "svg": {"Date": None, "Creator": None},
        "pdf": {"CreationDate": None, "Creator": None, "Producer": None},
    }[fmt]
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=DPI, metadata=metadata)
    return buffer.getvalue()


def _boxes(ax, data: Mapping[str, Sequence[float]], ylabel: str, title: str = "") -> None:
    """Hatched box per run with its points overlaid (deterministic jitter)."""
    labels = list(data)
    values = [np.asarray(data[k], dtype=float) for k in labels]
    values = [v[~np.isnan(v)] for v in values]
    boxes = ax.boxplot(values, patch_artist=True, widths=0.55, showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=15 if len(labels) > 3 else 0)
    rng = np.random.default_rng(0)
    for i, (patch, v) in enumerate(zip(boxes["boxes"], values, strict=True)):
        style = _style(i)
        patch.set(facecolor="white", edgecolor=style["color"], hatch=style["hatch"], linewidth=1.4)
        jitter = rng.uniform(-0.18, 0.18, size=v.size)
        ax.scatter(
            i + 1 + jitter,
            v,
            s=8,
            marker=style["marker"],
            color=style["color"],
            alpha=0.75,
            zorder=3,
            linewidths=0,
        )
    for median in boxes["medians"]:
        median.set(color="black", linewidth=1.6)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)


MIN_UNIT_SPAN = 0.2
"""The least y-range, in units of a [0, 1] metric, a plot of one shows: a spread of 0.005
drawn over the full height would read as drama."""


def at_least_span(ax, span: float = MIN_UNIT_SPAN, low: float = 0.0, high: float = 1.0) -> None:
    """Widen the y-axis to at least ``span`` around its centre, kept within [low, high]."""
    bottom, top = ax.get_ylim()
    if top - bottom >= span:
        return
    centre = (bottom + top) / 2
    bottom = min(max(low, centre - span / 2), high - span)
    ax.set_ylim(bottom, bottom + span)


@paper
def ndcg_across_orders(
    per_order: Mapping[str, Sequence[float]],
    reference: Mapping[str, float],
    spread: Mapping[str, Sequence[float]],
):
    """Left: NDCG@10 of each shown order (mean over queries) per run, the identity order starred.
    Right: per query, the NDCG@10 range (max - min) across its orders."""
    panels = 2 if per_order else 1
    fig, axes = _figure(ONE_COLUMN * panels, 2.8, ncols=panels)
    if per_order:
        ax = axes[0]
        _boxes(ax, per_order, f"NDCG@{TOP_K} (mean over queries)", "(a) per shown order")
        for i, label in enumerate(per_order):
            if label in reference and np.isfinite(reference[label]):
                ax.scatter(
                    [i + 1],
                    [reference[label]],
                    marker="*",
                    s=70,
                    color="black",
                    zorder=4,
                    label="identity (first-stage) order" if i == 0 else None,
                )
        ax.legend(loc="best")
        at_least_span(ax)
    _boxes(
        axes[-1],
        spread,
        f"NDCG@{TOP_K} range across orders",
        "(b) per query: max - min" if per_order else "",
    )
    at_least_span(axes[-1])
    return fig


def ecdf_band(values: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sorted values and the Dvoretzky-Kiefer-Wolfowitz simultaneous ``1 - alpha`` band
    around their ECDF: ECDF ± sqrt(ln(2/alpha) / 2n), clipped to [0, 1]. With few queries the
    band is wide, which is the point: two curves inside each other's band are not different."""
    x = np.sort(np.asarray(values, dtype=float))
    eps = np.sqrt(np.log(2.0 / alpha) / (2.0 * x.size))
    ecdf = np.arange(1, x.size + 1) / x.size
    return x, np.clip(ecdf - eps, 0.0, 1.0), np.clip(ecdf + eps, 0.0, 1.0)


@paper
def stability_ecdf(tau: Mapping[str, Sequence[float]], rbo: Mapping[str, Sequence[float]]):
    """ECDF over queries of mean pairwise Kendall tau and RBO@10 (right = more stable), each
    with its 95% DKW band."""
    fig, axes = _figure(TWO_COLUMNS, 3.0, ncols=2)
    for ax, data, name, lo, letter in (
        (axes[0], tau, "Kendall tau", -1.0, "a"),
        (axes[1], rbo, f"RBO@{TOP_K}", 0.0, "b"),
    ):
        for i, (label, values) in enumerate(data.items()):
            v = np.asarray(values, dtype=float)
            v = v[~np.isnan(v)]
            if v.size == 0:
                continue
            style = _style(i)
            ax.ecdf(
                v,
                label=label,
                color=style["color"],
                linestyle=style["linestyle"],
                marker=style["marker"],
                markevery=max(1, v.size // 8),
                markersize=3,
            )
            x, lower, upper = ecdf_band(v)
            ax.fill_between(x, lower, upper, step="post", color=style["color"], alpha=0.12)
        ax.set_xlim(lo - 0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"{name}, mean over order pairs (1 = identical)")
        ax.set_ylabel("share of queries ≤ x")
        ax.set_title(f"({letter}) {name}")
        ax.grid(alpha=0.3)
    _legend_below(fig, axes[0], len(tau))
    return fig


def _legend_below(fig, ax, count: int) -> None:
    """One legend for all panels, under them, so it never hides a curve."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(count, 3))


@paper
def rank_heatmaps(matrices: Mapping[str, np.ndarray]):
    """P(output rank | input position) per run: flat = invariant, diagonal = copies its input."""
    count = len(matrices)
    ncols = min(count, 3)
    nrows = -(-count // ncols)
    width = ONE_COLUMN if ncols == 1 else TWO_COLUMNS
    fig, axes = _figure(width, (2.6 if ncols < 3 else 2.2) * nrows, ncols=ncols, nrows=nrows)
    image = None
    for ax, (label, matrix) in zip(axes, matrices.items(), strict=False):
        m = np.asarray(matrix, dtype=float)
        n = m.shape[0]
        image = ax.imshow(
            m,
            cmap="viridis",
            vmin=0.0,
            vmax=1.0,
            origin="upper",
            extent=(0.5, n + 0.5, n + 0.5, 0.5),
            interpolation="nearest",
        )
        ax.set_title(label)
        ax.set_xlabel("output rank (1 = top)")
        ax.set_ylabel("input position")
        _integer_ticks(ax.xaxis, ax.yaxis)
    for ax in axes[count:]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=list(axes[:count]), label="P(rank | position)")
    return fig


@paper
def exposure_by_position(
    exposure: Mapping[str, Sequence[float]],
    expected: Mapping[str, Sequence[float]],
    k: int = TOP_K,
    bands: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
):
    """Share of outputs where the item shown at position p lands in the top k, vs no bias;
    ``bands``: per run, the no-bias 95% binomial range of that share (random designs)."""
    fig, axes = _figure(ONE_COLUMN, 2.8)
    ax = axes[0]
    drawn: list[np.ndarray] = []
    shaded: list[tuple[int, np.ndarray, np.ndarray]] = []
    for i, (label, (low, high)) in enumerate((bands or {}).items()):
        lo, hi = 100 * np.asarray(low, dtype=float), 100 * np.asarray(high, dtype=float)
        if any(_close(lo, a) and _close(hi, b) for _, a, b in shaded):
            continue  # runs of (nearly) the same design share one band
        shaded.append((list(exposure).index(label) if label in exposure else i, lo, hi))
    for n, (i, lo, hi) in enumerate(shaded):
        ax.fill_between(
            np.arange(1, lo.size + 1),
            lo,
            hi,
            color="0.5" if len(shaded) == 1 else _style(i)["color"],
            alpha=0.15,
            step="mid",
            linewidth=0,
            label=None if n else "no-bias 95% range" + (" (per run)" if len(shaded) > 1 else ""),
        )
    for i, (label, share) in enumerate(exposure.items()):
        y = 100 * np.asarray(share, dtype=float)
        x = np.arange(1, y.size + 1)
        style = _style(i)
        ax.plot(
            x,
            y,
            label=label,
            color=style["color"],
            linestyle=style["linestyle"],
            marker=style["marker"],
            markevery=max(1, y.size // 12),
        )
        e = 100 * np.asarray(expected.get(label, []), dtype=float)
        if e.size and not any(
            e.shape == d.shape and np.allclose(e, d, equal_nan=True) for d in drawn
        ):
            ax.plot(
                np.arange(1, e.size + 1),
                e,
                color="black",
                linewidth=1.6,
                linestyle=(0, (1, 1)),
                label="no position bias (k/n)" if not drawn else None,
            )
            drawn.append(e)
    ax.set_xlabel("input position (1 = shown first)")
    _integer_ticks(ax.xaxis)
    ax.set_ylabel(f"share of outputs in top {k} (%)")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return fig


BAND_TOLERANCE = 2.0
"""Percentage points within which two runs' no-bias bands are drawn (and named) as one."""


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    both = ~(np.isnan(a) | np.isnan(b))
    return bool(np.array_equal(np.isnan(a), np.isnan(b))) and bool(
        np.all(np.abs(a[both] - b[both]) <= BAND_TOLERANCE)
    )


@paper
def lost_in_the_middle(curves: Mapping[str, SweepCurve]):
    """Sweep strategy: output rank and NDCG@10 when a relevant item is shown at position p."""
    fig, axes = _figure(TWO_COLUMNS, 3.0, ncols=2)
    for i, (label, curve) in enumerate(curves.items()):
        style = _style(i)
        kwargs = {
            "color": style["color"],
            "linestyle": style["linestyle"],
            "marker": style["marker"],
            "markevery": max(1, curve.positions.size // 12),
            "label": label,
        }
        axes[0].plot(curve.positions, curve.mean_rank, **kwargs)
        axes[1].plot(curve.positions, curve.mean_ndcg, **kwargs)
    axes[0].invert_yaxis()
    _integer_ticks(axes[0].xaxis, axes[0].yaxis, axes[1].xaxis)
    axes[0].set_ylabel("mean output rank (1 = top)")
    axes[0].set_title("(a) rank of the moved relevant item")
    axes[1].set_ylabel(f"NDCG@{TOP_K} (mean over moved items)")
    axes[1].set_title(f"(b) NDCG@{TOP_K}")
    for ax in axes:
        ax.set_xlabel("input position of the relevant item")
        ax.grid(alpha=0.3)
    _legend_below(fig, axes[0], len(curves))
    return fig


def _integer_ticks(*axes) -> None:
    from matplotlib.ticker import MaxNLocator

    for axis in axes:
        axis.set_major_locator(MaxNLocator(nbins=6, integer=True))


@paper
def latency_per_run(latencies: Mapping[str, Sequence[float]]):
    """Per-order latency in ms (log scale: controls take microseconds, LLMs seconds)."""
    width = ONE_COLUMN if len(latencies) <= 3 else TWO_COLUMNS
    fig, axes = _figure(width, 2.6)
    clipped = {k: np.maximum(np.asarray(v, dtype=float), 1e-3) for k, v in latencies.items()}
    _boxes(axes[0], clipped, "latency per order (ms, log)")
    axes[0].set_yscale("log")
    return fig


@paper
def stability_vs_effectiveness(points: Mapping[str, RunPoint]):
    """One point per run with 95% intervals: top right is accurate and order-stable."""
    fig, axes = _figure(ONE_COLUMN, 3.0)
    ax = axes[0]
    for i, (label, p) in enumerate(points.items()):
        style = _style(i)
        xerr = [[max(p.tau - p.tau_ci[0], 0)], [max(p.tau_ci[1] - p.tau, 0)]]
        yerr = [[max(p.ndcg - p.ndcg_ci[0], 0)], [max(p.ndcg_ci[1] - p.ndcg, 0)]]
        ax.errorbar(
            [p.tau],
            [p.ndcg],
            xerr=xerr,
            yerr=yerr,
            fmt=style["marker"],
            markersize=6,
            color=style["color"],
            capsize=3,
            label=label,
            markeredgecolor="black",
        )
        ax.annotate(label, (p.tau, p.ndcg), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.set_xlim(-1.05, 1.1)
    ax.set_xlabel("stability: Kendall tau across orders")
    ax.set_ylabel(f"effectiveness: NDCG@{TOP_K}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return fig


@paper
def mitigation_pareto(rows: Sequence[Any]):
    """Effectiveness (a) and stability (b) against cost per order, one point per run with 95%
    intervals; Pareto-front runs are large and ringed, a dotted arrow runs from each wrapped
    reranker to the meta-reranker that wraps it. ``rows`` are
    :class:`~harness.report.mitigation.MitigationRow`."""
    fig, axes = _figure(TWO_COLUMNS, 3.0, ncols=2)
    where = {row.label: row for row in rows}
    panels = (
        (axes[0], "ndcg", "ndcg_ci", f"NDCG@{TOP_K}", (0.0, 1.0), "(a) effectiveness"),
        (axes[1], "tau", "tau_ci", "Kendall tau across orders", (-1.0, 1.0), "(b) stability"),
    )
    costs = sorted({row.forward_passes for row in rows if np.isfinite(row.forward_passes)})
    for ax, key, ci_key, ylabel, (bottom, top), title in panels:
        for i, row in enumerate(rows):
            style = _style(i)
            x, y = row.forward_passes, getattr(row, key)
            low, high = getattr(row, ci_key)
            yerr = None
            if np.isfinite(low) and np.isfinite(high):
                yerr = [[max(y - low, 0)], [max(high - y, 0)]]
            ax.errorbar(
                [x],
                [y],
                yerr=yerr,
                fmt=style["marker"],
                markersize=8 if row.pareto else 5,
                color=style["color"],
                markeredgecolor="black",
                markeredgewidth=1.6 if row.pareto else 0.6,
                capsize=2,
                label=f"{row.label}{' (Pareto)' if row.pareto else ''}",
            )
            inner = where.get(row.inner_label)
            if inner is not None:
                ax.annotate(
                    "",
                    xy=(x, y),
                    xytext=(inner.forward_passes, getattr(inner, key)),
                    arrowprops={"arrowstyle": "->", "linestyle": ":", "color": "grey"},
                )
        ax.set_xscale("symlog", linthresh=1.0)
        _cost_ticks(ax, costs)
        ax.set_xlabel("forward passes per order (symlog)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        low, high = ax.get_ylim()  # the metric's range: NDCG never below 0, tau within [-1, 1]
        ax.set_ylim(max(bottom, low), min(top + 0.02 * (top - bottom), high))
        ax.grid(alpha=0.3)
    _legend_below(fig, axes[0], len(rows))
    return fig


def _cost_ticks(ax, costs: Sequence[float]) -> None:
    """Label the costs the runs have (0, 1, 3, 5 ...) on the symlog axis, which would
    otherwise show only its decades; at most eight, spread over the range."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    if not costs:
        return
    if len(costs) > 8:
        picks = np.unique(np.linspace(0, len(costs) - 1, 8).round().astype(int))
        costs = [costs[i] for i in picks]
    ax.xaxis.set_major_locator(FixedLocator(list(costs)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(min(costs) - 0.3 if min(costs) <= 1 else min(costs) * 0.7, max(costs) * 1.4 + 0.3)
