"""The report's downloadable data: every run's per-query values as one CSV file.

The HTML shows the queries that moved most; a reader who wants to sort, filter or plot all
of them opens ``STEM_figures/per_query.csv`` in a spreadsheet or pandas instead.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence

from harness.metrics import registry
from harness.report.load import RunData

PER_QUERY_CSV = "per_query.csv"


def per_query_csv(runs: Sequence[RunData]) -> str:
    """One row per (run, query): ``run``, ``query_id``, then every per-query metric in
    registry order (empty where a run lacks a metric or a query's value is undefined), then
    the run's ``relevance_level`` (the grade from which its binary metrics, such as
    ``mrr@10``, count a candidate as relevant)."""
    names = [spec.name for spec in registry.per_query()]
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
