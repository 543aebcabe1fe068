"""The report's downloadable data: every run's per-query values as one CSV file, and every
report table as LaTeX (booktabs) and CSV.

The HTML shows the queries that moved most; a reader who wants to sort, filter or plot all
of them opens ``STEM_figures/per_query.csv`` in a spreadsheet or pandas instead. A table
for a paper is ``STEM_figures/tables/KEY.tex`` (``\\input`` it; needs booktabs).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import replace

from harness.report.compare import run_metrics
from harness.report.document import Section, Table
from harness.report.load import RunData

PER_QUERY_CSV = "per_query.csv"


def per_query_csv(runs: Sequence[RunData]) -> str:
    """One row per (run, query): ``run``, ``query_id``, then every per-query metric in
    registry order (empty where a run lacks a metric or a query's value is undefined), then
    the run's ``relevance_level`` (the grade from which its binary metrics, such as
    ``mrr@10``, count a candidate as relevant)."""
    names = [spec.name for spec in run_metrics(runs).per_query()]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["run", "query_id", *names, "relevance_level"])
    for run in runs:
        level = run.results.relevance_level
        for query_id, row in run.results.per_query.items():
            cells = (_cell(row.get(name)) for name in names)
            writer.writerow([run.label, query_id, *cells, level])
    return buffer.getvalue()


def _cell(value: float | int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


TABLES_DIR = "tables"
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\u00a0": "~",
    "<": r"$<$",
    ">": r"$>$",
    "|": r"\textbar{}",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "±": r"$\pm$",
    "\u2212": "-",  # minus sign
    "…": r"\ldots{}",
    "τ": r"$\tau$",
}


def table_csv(table: Table) -> str:
    """The table's header and cells as CSV (the cells' text, marks such as ``*`` included)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.header)
    writer.writerows(table.rows)
    return buffer.getvalue()


def table_latex(table: Table) -> str:
    """A booktabs ``table`` environment (``\\usepackage{booktabs}``): numbers right-aligned,
    bold cells ``\\textbf``, a trailing significance mark `` *`` as a superscript."""
    align = "".join("r" if table.is_numeric(i) else "l" for i in range(len(table.header)))

    def cell(r: int, i: int, text: str) -> str:
        mark = ""
        if text.endswith(" *"):
            text, mark = text[:-2], "$^{*}$"
        body = latex_escape(text) + mark
        return rf"\textbf{{{body}}}" if table.is_strong(r, i) else body

    lines = [
        "% requires \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        "\\small",
    ]
    if table.caption:
        lines.append(f"\\caption{{{latex_escape(table.caption)}}}")
    if table.key:
        lines.append(f"\\label{{tab:{table.key}}}")
    lines += [
        f"\\begin{{tabular}}{{{align}}}",
        "\\toprule",
        " & ".join(latex_escape(h) for h in table.header) + " \\\\",
        "\\midrule",
        *(
            " & ".join(cell(r, i, c) for i, c in enumerate(row)) + " \\\\"
            for r, row in enumerate(table.rows)
        ),
        "\\bottomrule",
        "\\end{tabular}",
        "\\end{table}",
    ]
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def keyed_tables(sections: Sequence[Section]) -> tuple[Section, ...]:
    """The sections with every table given a unique file-name key (its own, else from its
    section title and caption), so its LaTeX and CSV files can be written and linked."""
    used: set[str] = set()
    out = []
    for section in sections:
        tables = []
        for table in section.tables:
            base = table.key or slug(f"{section.title} {table.caption}"[:60])
            key, n = base, 2
            while key in used:
                key, n = f"{base}-{n}", n + 1
            used.add(key)
            tables.append(replace(table, key=key))
        out.append(replace(section, tables=tuple(tables)))
    return tuple(out)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "table"
