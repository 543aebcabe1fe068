"""The report's tables and text sections, built from loaded runs (plain-text cells)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from harness.metrics import registry
from harness.metrics.registry import TOP_K
from harness.report.compare import (
    ALL_PAIRS_UP_TO,
    Comparability,
    PairedResult,
    moved_most,
    run_metrics,
)
from harness.report.document import Section, Table, fmt, fmt_p, fmt_signed, with_interval
from harness.report.load import RunData
from harness.results.markdown import (
    REPAIR_NOTE,
    design_text,
    excess_text,
    floor_note,
    floor_text,
    value_text,
)
from harness.results.schema import RunResults

MOVED_QUERIES = 5


def provenance_tables(runs: Sequence[RunData]) -> tuple[Table, ...]:
    """Where each run came from. With several runs, the rows on which every run agrees are
    collapsed into one "shared by every run" table, so what differs stands out."""
    table = _provenance_table(runs)
    if len(runs) < 2:
        return (table,)
    differing = tuple(row for row in table.rows if len(set(row[1:])) > 1)
    shared = tuple((row[0], row[1]) for row in table.rows if len(set(row[1:])) == 1)
    tables = []
    if differing:
        tables.append(
            Table(header=table.header, rows=differing, caption="What differs", key="runs")
        )
    if shared:
        tables.append(
            Table(
                header=("", "every run"),
                rows=shared,
                caption="Shared by every run",
                key="runs-shared",
            )
        )
    return tuple(tables)


def _provenance_table(runs: Sequence[RunData]) -> Table:
    def row(name: str, getter) -> tuple[str, ...]:
        return (name, *(_text(getter(r)) for r in runs))

    def identity(r: RunData) -> Mapping[str, Any]:
        return r.results.reranker.identity

    def packages(r: RunData) -> str:
        found = r.results.environment.get("packages") or {}
        keep = ("harness-rerank", "numpy", "scipy", "ranx", "torch", "transformers")
        return ", ".join(f"{k} {found[k]}" for k in keep if k in found)

    def hardware(r: RunData) -> str:
        env = r.results.environment
        config = r.results.config
        return (
            f"{env.get('machine', '?')}, {env.get('cpu_count', '?')} CPUs, device "
            f"{env.get('device_used', config.get('device', '?'))}, "
            f"batch {config.get('batch_size', '?')}; "
            f"{env.get('platform', '')}"
        )

    def source(r: RunData) -> str:
        src = r.results.environment.get("source") or {}
        if not src:
            return "n/a"
        return f"{str(src.get('commit'))[:12]}{' (dirty)' if src.get('dirty') else ''}"

    def data(r: RunData) -> str:
        d = r.results.dataset
        return f"{d.name} (fingerprint {d.fingerprint})"

    def queries(r: RunData) -> str:
        d = r.results.dataset
        depth = r.results.header.depth
        return f"{d.queries_used} of {d.queries_available}, depth {depth or 'all'}"

    def perms(r: RunData) -> str:
        p = r.results.permutations
        shown = r.results.counts.get("samples", p.total_orders)
        orders = f"{shown} of at most {p.total_orders}" if shown != p.total_orders else shown
        return f"{p.strategy}: {design_text(r.results)}, seed {p.seed}; {orders} orders"

    def toolkit(r: RunData) -> str:
        found = identity(r)
        if not found.get("toolkit"):
            return "none"
        settings = _mapping_text(found.get("toolkit_settings") or {})
        return f"{found['toolkit']} {found.get('toolkit_version', '?')}; settings: {settings}"

    toolkits = any(identity(r).get("toolkit") for r in runs)
    rows = (
        row("reranker", lambda r: f"{r.reranker} ({r.results.reranker.adapter})"),
        *((row("toolkit", toolkit),) if toolkits else ()),
        row("declared order-invariant", lambda r: r.results.reranker.order_invariant),
        row("model", lambda r: _model_text(identity(r).get("model"))),
        row("prompt hash", lambda r: _model_text(identity(r).get("prompt_sha256"), "none")),
        row(
            "reuses work across orders",
            lambda r: bool(identity(r).get("reuses_work_across_orders", False)),
        ),
        row("params", lambda r: _mapping_text(r.results.reranker.params)),
        row("dataset", data),
        row("queries", queries),
        row(
            "relevance level (binary metrics)",
            lambda r: f"grade ≥ {r.results.relevance_level}",
        ),
        row("permutations", perms),
        row("config hash", lambda r: r.results.header.config_hash),
        row("versions", packages),
        row("hardware", hardware),
        row("source", source),
        row("wall time (s)", lambda r: fmt(r.results.wall_time_s, 1)),
        row("finished", lambda r: r.results.finished),
        row("run folder", lambda r: str(r.path)),
    )
    return Table(header=("", *(r.label for r in runs)), rows=rows, key="runs")


def headline_table(
    runs: Sequence[RunData], comparisons: Sequence[PairedResult] = (), alpha: float = 0.05
) -> Table:
    """Each headline metric per run; with two or more runs the best value of a metric with a
    direction is bold, and a run's cell is marked ``*`` where its paired difference from
    the first run is significant after Holm (the comparison section's test)."""
    significant = {
        (c.metric, c.b) for c in comparisons if c.a == runs[0].label and c.p_holm < alpha
    }
    rows: list[tuple[str, ...]] = []
    strong: set[tuple[int, int]] = set()
    levels = {r.results.relevance_level for r in runs}
    metrics = run_metrics(runs)
    for spec in metrics.headline():
        if not any(spec.name in r.results.summary for r in runs):
            continue
        # a binary metric at different relevance levels is not one quantity: no best one
        mixed = spec.binary and len(levels) > 1
        best = _best_runs(runs, spec) if len(runs) > 1 and not mixed else set()
        strong |= {(len(rows), 2 + i) for i in best}
        cells = []
        for r in runs:
            entry = r.results.summary.get(spec.name)
            if entry is None:
                cells.append(with_interval(math.nan, None))
                continue
            undefined = r.results.undefined_text(spec.name)
            cell = (
                with_interval(entry.value, entry.ci95)
                if entry.value == entry.value
                else undefined or fmt(entry.value)
            )
            if undefined and entry.value == entry.value:
                cell += f" ({undefined})"
            if mixed:
                cell += f" (rel ≥ {r.results.relevance_level})"
            if entry.ci95 is None and entry.no_bias_floor is not None:
                cell += f" (no-bias floor {fmt(entry.no_bias_floor)})"
            if r.results.floor(spec.name) is not None:
                cell += f" (noise floor {floor_text(r.results, spec.name)})"
            if (spec.name, r.label) in significant:
                cell += " *"
            cells.append(cell)
        name = metrics.label(spec.name, None if mixed else next(iter(levels)))
        rows.append((name, spec.shows, *cells))
    caption = (
        f"Bold: the best value per metric; *: differs from {runs[0].label} (paired sign-flip "
        f"test, Holm-adjusted p < {alpha:g})."
        if len(runs) > 1
        else ""
    )
    if len(levels) > 1:
        caption += (
            " The runs count relevance from different grades (rel ≥ N after each binary "
            "metric's value): those values are not compared."
        )
    return Table(
        header=("metric", "what it shows", *(r.label for r in runs)),
        rows=tuple(rows),
        numeric=(False, False, *(True,) * len(runs)),
        caption=caption,
        strong=frozenset(strong),
        key="headline",
    )


def _best_runs(runs: Sequence[RunData], spec: registry.MetricSpec) -> set[int]:
    """Indices of the runs with the best summary value of ``spec`` (ties all best); none
    for a metric without a direction or when every run has the same value."""
    if not spec.has_direction:
        return set()
    values = [r.results.summary_value(spec.name) for r in runs]
    finite = [v for v in values if not math.isnan(v)]
    if len(finite) < 2 or max(finite) - min(finite) <= 1e-12:
        return set()
    target = max(finite) if spec.higher_is_better else min(finite)
    return {i for i, v in enumerate(values) if not math.isnan(v) and abs(v - target) <= 1e-12}


def comparison_section(
    comparisons: Sequence[PairedResult], found: Comparability, count: int, alpha: float = 0.05
) -> Section:
    """Paired tests within each comparable group of runs; what is left out says why."""
    many = any(len(group) > ALL_PAIRS_UP_TO for group in found.groups)
    if count < 2:
        return Section("Comparison", paragraphs=("One run: nothing to compare.",))
    if not found.compared:
        return Section("Comparison", paragraphs=(found.note() or "",))
    rows = tuple(
        (
            c.label,
            f"{c.b} - {c.a}",
            fmt(c.mean_a),
            fmt(c.mean_b),
            f"{fmt_signed(c.diff)} [{fmt_signed(c.ci95[0])}, {fmt_signed(c.ci95[1])}]"
            + (" *" if c.p_holm < alpha else ""),
            fmt_p(c.p_value),
            fmt_p(c.p_holm),
            f"{c.wins}/{c.ties}/{c.losses}",
        )
        for c in comparisons
    )
    table = Table(
        header=(
            "metric",
            "pair (B - A)",
            "mean A",
            "mean B",
            "difference [95% CI]",
            "p",
            "p (Holm)",
            "B wins/ties/losses",
        ),
        rows=rows,
        numeric=(False, False, True, True, True, True, True, True),
        caption=f"*: Holm-adjusted p < {alpha:g}.",
        key="comparison",
    )
    note = (
        "Paired over the same queries: difference = B - A per query, averaged, with a seeded "
        "paired-bootstrap 95% interval; p is a two-sided sign-flip permutation test (seeded), "
        "Holm-adjusted across all rows. Wins count queries where B is better (ties within 1e-9)."
        + (
            " In a group of more than three runs, each run is compared with the group's first."
            if many
            else ""
        )
    )
    paragraphs = (note,) if found.note() is None else (found.note() or "", note)
    return Section("Comparison", paragraphs=paragraphs, tables=(table,))


def moved_section(runs: Sequence[RunData]) -> Section:
    tables, paragraphs = [], []
    for r in runs:
        moved = moved_most(r, MOVED_QUERIES)
        taus = [m.kendall_tau for m in moved if not math.isnan(m.kendall_tau)]
        if not taus:
            paragraphs.append(f"{r.label}: no pairs of outputs to compare (one order per query).")
            continue
        if min(taus) >= 1 - 1e-6:
            paragraphs.append(f"{r.label}: every query gave the same ranking in every order.")
            continue
        rows = tuple(
            (
                m.query_id,
                _clip(m.text, 70),
                fmt(m.kendall_tau),
                fmt(m.rbo),
                fmt(m.ndcg_range),
                fmt(m.ndcg_mean),
                fmt(m.ndcg_reference),
            )
            for m in moved
        )
        tables.append(
            Table(
                header=(
                    "query",
                    "text",
                    "Kendall tau",
                    f"RBO@{TOP_K}",
                    f"NDCG@{TOP_K} range",
                    f"NDCG@{TOP_K} mean",
                    f"NDCG@{TOP_K} reranking the first-stage order",
                ),
                rows=rows,
                numeric=(False, False, True, True, True, True, True),
                caption=r.label,
            )
        )
    paragraphs.insert(
        0,
        f"Per run, the {MOVED_QUERIES} queries with the lowest mean pairwise Kendall tau across "
        f"orders (ties broken by the widest NDCG@{TOP_K} range).",
    )
    return Section(
        "Queries whose ranking moved most", paragraphs=tuple(paragraphs), tables=tuple(tables)
    )


def _floor_cell(results: RunResults, metric: str) -> str:
    """``0.3610; floor 0.3530 [...], within; excess +0.0080 [...], p 1``: the measured value
    (the design's, on the blocks the floor is matched with), the floor, and the test."""
    floor = results.floor(metric) or {}
    measured = floor.get("design") if results.floor_tested else results.summary_value(metric)
    cell = f"{value_text(results, metric, measured)}; floor {floor_text(results, metric)}"
    excess = excess_text(results, metric)
    return cell + (f"; excess {excess}" if excess else "")


def floor_section(runs: Sequence[RunData]) -> Section | None:
    """Each stability metric beside its noise floor, for the runs made with ``--repeats``."""
    floored = [r for r in runs if r.results.noise_floor]
    if not floored:
        return None
    rows = []
    for spec in run_metrics(floored).with_floor():
        cells = [_floor_cell(r.results, spec.name) for r in floored]
        rows.append((spec.name, spec.shows, *cells))
    rows.append(
        (
            "score_spread",
            "largest change of a candidate's score over the reruns",
            *(floor_text(r.results, "score_spread") or "n/a" for r in floored),
        )
    )
    table = Table(
        header=("metric", "what it shows", *(r.label for r in floored)),
        rows=tuple(rows),
        numeric=(False, False, *(True,) * len(floored)),
    )
    notes = tuple(f"{r.label}: {floor_note(r.results)}" for r in floored)
    return Section("Stability and its noise floor", paragraphs=notes, tables=(table,))


def repair_paragraphs(runs: Sequence[RunData]) -> tuple[str, ...]:
    """The parse-repair rate of each generative run, with why it matters for stability."""
    found = [
        f"{r.label}: {fmt(r.results.summary_value(registry.PARSE_REPAIR_RATE))} of orders "
        "needed a repair"
        for r in runs
        if not math.isnan(r.results.summary_value(registry.PARSE_REPAIR_RATE))
    ]
    return (*found, REPAIR_NOTE) if found else ()


def parse_table(runs: Sequence[RunData]) -> Table | None:
    rows = []
    statuses = sorted({s for r in runs for rates in r.results.parse_status.values() for s in rates})
    for r in runs:
        for family, rates in r.results.parse_status.items():
            rows.append((r.label, family, *(f"{100 * rates.get(s, 0.0):.1f}%" for s in statuses)))
    if not rows:
        return None
    return Table(
        header=("run", "orders", *statuses),
        rows=tuple(rows),
        numeric=(False, False, *(True,) * len(statuses)),
    )


# Plot key -> (title, caption); the key also names the PNG written beside the Markdown.
def _model_text(model: Any, missing: str = "none (no model)") -> str:
    if not model:
        return missing
    if isinstance(model, Mapping):
        return _mapping_text(model)
    return str(model)


def _mapping_text(mapping: Mapping[str, Any], limit: int = 160) -> str:
    if not mapping:
        return "{}"
    text = ", ".join(f"{k}={_short(v) if isinstance(v, str) else v}" for k, v in mapping.items())
    return _clip(text, limit)


def _short(value: Any) -> str:
    if value is None:
        return "n/a"
    text = str(value)
    match = re.fullmatch(r"((?:sha256:)?[0-9a-f]{12})[0-9a-f]{20,}", text)
    return f"{match[1]}…" if match else text


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "n/a" if value is None else str(value)
