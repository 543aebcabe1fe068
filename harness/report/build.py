"""Assemble a :class:`Report` from loaded runs and write it as HTML and Markdown."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.files import ensure_writable_folder, write_text_atomic
from harness.report.compare import comparability, compare_runs, groups_of, levels_note, moved_most
from harness.report.document import FIGURE_FORMATS, Report, Section
from harness.report.exports import (
    PER_QUERY_CSV,
    TABLES_DIR,
    keyed_tables,
    per_query_csv,
    table_csv,
    table_latex,
)
from harness.report.figures import build_figures, from_rendered
from harness.report.load import RunData, load_runs
from harness.report.mitigation import (
    OBJECTIVES,
    mitigation_rows,
    mitigation_section,
    recommend,
    recommendation_section,
)
from harness.report.reading import run_reading, too_few_queries_note
from harness.report.tables import (
    MOVED_QUERIES,
    comparison_section,
    floor_section,
    headline_table,
    moved_section,
    parse_table,
    provenance_tables,
    repair_paragraphs,
)
from harness.results.provenance import utc_now

DATA_FORMAT = "harness-report/1"


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path
    figures: Path


def write_report(
    run_dirs: Sequence[Path],
    out: Path | None = None,
    *,
    budget: float | None = None,
    objective: str = "both",
) -> ReportFiles:
    """Load the runs, build the report, write ``OUT.html``, ``OUT.md`` and ``OUT_figures/``
    (figures as SVG, PDF and PNG; ``tables/`` with every table as LaTeX and CSV).
    ``budget`` and ``objective`` steer the mitigation report's "What to use"."""
    from harness.report.html import render_html
    from harness.report.markdown import render_markdown

    runs = load_runs(run_dirs)
    stem = out if out is not None else Path("reports") / default_name(runs)
    if stem.suffix in {".html", ".md"}:
        stem = stem.with_suffix("")
    html = stem.with_name(stem.name + ".html")
    markdown = stem.with_name(stem.name + ".md")
    figures = stem.parent / f"{stem.name}_figures"
    for path in (html, markdown):
        if path.is_dir():
            raise HarnessError(f"{path}: is a folder, expected where the report file goes")
    ensure_writable_folder(stem.parent, "the report")
    report = build_report(runs, budget=budget, objective=objective)
    ensure_writable_folder(figures, "the report's figures")
    for figure in report.figures:
        for fmt in FIGURE_FORMATS:
            (figures / f"{figure.key}.{fmt}").write_bytes(figure.image(fmt))
    write_text_atomic(figures / PER_QUERY_CSV, per_query_csv(runs))
    tables = figures / TABLES_DIR
    tables.mkdir(exist_ok=True)
    for table in report.tables:
        write_text_atomic(tables / f"{table.key}.tex", table_latex(table))
        write_text_atomic(tables / f"{table.key}.csv", table_csv(table))
    write_text_atomic(html, render_html(report, figures_dir=figures.name))
    write_text_atomic(markdown, render_markdown(report, figures_dir=figures.name))
    return ReportFiles(html=html, markdown=markdown, figures=figures)


def default_name(runs: Sequence[RunData]) -> str:
    """``first-stage-vs-identity``-style stem, shortened with a hash when very long."""
    name = re.sub(r"[^A-Za-z0-9_.@-]+", "_", "-vs-".join(r.path.name for r in runs))
    if len(name) > 80:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:70]}-{digest}"
    return name


def _with_note(section: Section, note: str | None) -> Section:
    """``section`` with ``note`` as its last paragraph (unchanged when there is none)."""
    if note is None:
        return section
    return replace(section, paragraphs=(*section.paragraphs, note))


def build_report(
    runs: Sequence[RunData],
    *,
    seed: int = 0,
    budget: float | None = None,
    objective: str = "both",
) -> Report:
    labels = [r.label for r in runs]
    datasets = sorted({r.results.dataset.name for r in runs})
    found = comparability(runs)
    groups = groups_of(runs, found)
    comparisons = compare_runs(runs, seed=seed, groups=groups) if groups else []
    figures, plot_notes, plot_data = build_figures(runs)
    sections = [
        Section("Runs", tables=provenance_tables(runs)),
        Section(
            "Headline",
            paragraphs=(
                "Means over queries with 95% percentile-bootstrap intervals (queries resampled, "
                "seeded by the run seed); latency percentiles are over reranked orders. "
                "Stability metrics average all pairs of outputs for the same query.",
                *(run_reading(r.label, r.results) for r in runs),
                f"Every query's value of every metric, per run: {PER_QUERY_CSV} in the "
                "report's figures folder (sortable in a spreadsheet or pandas).",
            ),
            tables=(headline_table(runs, comparisons),),
        ),
        *(section for section in (floor_section(runs),) if section is not None),
        _with_note(
            _with_note(
                comparison_section(comparisons, found, len(runs)),
                too_few_queries_note(min(c.n for c in comparisons), len(comparisons))
                if comparisons
                else None,
            ),
            levels_note([r for group in groups for r in group]) if groups else None,
        ),
    ]
    if objective not in OBJECTIVES:
        raise HarnessError(f"--objective {objective}: expected one of {', '.join(OBJECTIVES)}")
    mitigation = mitigation_rows(groups[0]) if groups else []
    advice = None
    if mitigation:
        from harness.report import plots

        figure = from_rendered(
            "mitigation_pareto",
            "Effectiveness and stability vs cost",
            "One point per run (95% bootstrap intervals over queries): (a) NDCG@10, (b) Kendall "
            "tau across orders; x is the mean forward "
            "passes per order on a symlog axis. Large ringed points are on the Pareto front "
            "(NDCG@10 up, Kendall tau up, forward passes down); dotted arrows go from a "
            "reranker to the meta-reranker that wraps it.",
            plots.mitigation_pareto(mitigation),
        )
        covered = None
        if len(groups[0]) < len(runs):
            covered = (
                f"Over {', '.join(r.label for r in groups[0])}, the largest group of runs on "
                "the same queries (see Comparison)."
            )
        sections.append(_with_note(mitigation_section(mitigation, (figure,)), covered))
        advice = recommend(groups[0], mitigation, budget=budget, objective=objective, seed=seed)
        sections.append(recommendation_section(advice, mitigation))
    sections += [
        Section("Plots", paragraphs=tuple(plot_notes), figures=tuple(figures)),
        moved_section(runs),
    ]
    parse = parse_table(runs)
    if parse is not None:
        sections.append(
            Section(
                "Parse status of generated outputs",
                paragraphs=repair_paragraphs(runs),
                tables=(parse,),
            )
        )
    queries = {len(r.query_ids) for r in runs}
    subtitle = (
        f"{', '.join(labels)} on {', '.join(datasets)}; "
        f"{'/'.join(str(q) for q in sorted(queries))} queries; generated {utc_now()}"
    )
    data = {
        "format": DATA_FORMAT,
        "generated": utc_now(),
        "runs": [
            {"label": r.label, "path": str(r.path), "results": r.results.to_dict()} for r in runs
        ],
        "comparable": not found.left_out,
        "incomparable_reason": found.note(),
        "comparable_groups": [list(group) for group in found.groups],
        "not_compared": [{"label": label, "why": why} for label, why in found.left_out],
        "comparisons": [asdict(c) for c in comparisons],
        "mitigation": [asdict(m) for m in mitigation],
        "what_to_use": None if advice is None else asdict(advice),
        "moved_most": {r.label: [asdict(m) for m in moved_most(r, MOVED_QUERIES)] for r in runs},
        "series": plot_data,
    }
    return Report(
        title=f"Order sensitivity report: {', '.join(labels)}",
        subtitle=subtitle,
        sections=keyed_tables(sections),
        data=jsonable(data),
    )


def jsonable(value: Any) -> Any:
    """Plain JSON types only: numpy arrays to lists, NaN/inf to None (strict JSON)."""
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
