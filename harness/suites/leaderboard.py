"""A leaderboard across scorecards of one suite: HTML (sortable), Markdown and LaTeX.

Rows are rerankers, ordered by the suite's primary metric overall (best first); columns are the
tasks (primary metric per task), the suite's headline metrics overall (effectiveness,
stability, PPI/GPI, position bias) and costs. Each row is tested against the row below it on
the primary metric, paired query by query over the tasks both ran: a two-sided sign-flip test
of the macro difference (each task weighs the same), Holm-adjusted across the neighbour pairs.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.files import ensure_writable_folder, write_text_atomic
from harness.metrics import registry
from harness.metrics.bootstrap import bootstrap_macro_mean_ci
from harness.metrics.paired import holm, sign_flip_pvalue
from harness.suites.scorecard import COSTS, Scorecard, check_same_suite, read_scorecard

ALPHA = 0.05


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    group: str  # task | overall | cost | test
    higher_is_better: bool | None = None


@dataclass(frozen=True)
class Cell:
    value: float
    ci: tuple[float, float] | None = None
    text: str = ""  # a cell that is words, not a number


@dataclass(frozen=True)
class Row:
    label: str
    model: str
    cells: dict[str, Cell]


@dataclass(frozen=True)
class Neighbour:
    """Row i against row i + 1 on the primary metric (overall, paired)."""

    diff: float
    ci: tuple[float, float]
    p: float
    p_holm: float
    queries: int

    @property
    def significant(self) -> bool:
        return self.p_holm < ALPHA


@dataclass(frozen=True)
class Leaderboard:
    suite: dict[str, Any]
    primary: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    neighbours: tuple[Neighbour | None, ...]  # one per row; the last has none
    notes: tuple[str, ...] = field(default_factory=tuple)


def build_leaderboard(cards: Sequence[Scorecard]) -> Leaderboard:
    """Merge scorecards of one suite (refused when their suite hashes differ)."""
    if not cards:
        raise HarnessError("no scorecard given")
    check_same_suite(list(cards))
    labels = [c.label for c in cards]
    doubled = sorted({x for x in labels if labels.count(x) > 1})
    if doubled:
        raise HarnessError(f"reranker {doubled[0]!r} has more than one scorecard; give it once")
    first = cards[0]
    primary = str(first.data["primary"])
    spec = registry.get(primary)
    task_names = list(dict.fromkeys(t for c in cards for t in (*c.tasks, *c.data["missing"])))
    ran = [t for t in task_names if any(t in c.tasks for c in cards)]
    metrics = list(first.data["overall"])
    columns = [
        Column("tasks", "tasks", "overall"),
        *(Column(f"overall:{m}", registry.label(m, None), "overall", _better(m)) for m in metrics),
        *(Column(f"task:{t}", f"{t} {primary}", "task", spec.higher_is_better) for t in ran),
        Column("cost:seconds", "rerank s (all tasks)", "cost", False),
        Column("cost:passes", "passes/order", "cost", False),
        Column("test:next", f"{primary} vs next", "test"),
    ]
    sign = 1.0 if spec.higher_is_better else -1.0

    def key(card: Scorecard) -> tuple[float, str]:
        value = card.value(None, primary)
        return (math.inf if math.isnan(value) else -sign * value, card.label)

    ordered = sorted(cards, key=key)
    rows = tuple(_row(card, metrics, ran, len(task_names)) for card in ordered)
    tests = [
        _neighbour(a, b, primary, int(first.data["aggregate"]["seed"]))
        for a, b in itertools.pairwise(ordered)
    ]
    adjusted = holm([t[2] for t in tests]) if tests else np.zeros(0)
    neighbours = (
        *(
            Neighbour(d, ci, p, float(ph), n)
            for (d, ci, p, n), ph in zip(tests, adjusted, strict=True)
        ),
        None,
    )
    notes = []
    for card in ordered:
        for task, why in card.data["missing"].items():
            notes.append(f"{card.label}: task {task} not run ({why})")
    return Leaderboard(dict(first.suite), primary, tuple(columns), rows, neighbours, tuple(notes))


def _better(metric: str) -> bool | None:
    spec = registry.get(metric)
    return spec.higher_is_better if spec.has_direction else None


def _row(card: Scorecard, metrics: list[str], tasks: list[str], suite_tasks: int) -> Row:
    cells = {"tasks": Cell(len(card.tasks), text=f"{len(card.tasks)}/{suite_tasks}")}
    for metric in metrics:
        cells[f"overall:{metric}"] = Cell(card.value(None, metric), card.interval(None, metric))
    primary = str(card.data["primary"])
    for task in tasks:
        cells[f"task:{task}"] = Cell(card.value(task, primary), card.interval(task, primary))
    seconds = 0.0
    passes = []
    for entry in card.tasks.values():
        cost = entry["cost"]
        per_set = cost.get(COSTS[0])
        seconds += (math.nan if per_set is None else per_set) * entry["dataset"]["queries"] / 1000
        if cost.get(COSTS[1]) is not None:
            passes.append(cost[COSTS[1]])
    cells["cost:seconds"] = Cell(seconds)
    cells["cost:passes"] = Cell(float(np.mean(passes)) if passes else math.nan)
    return Row(card.label, _model(card.data["reranker"]), cells)


def _model(reranker: dict[str, Any]) -> str:
    """The model a reranker ran, as its runs recorded it: ``name@revision`` (12 characters of
    the revision); the preset's model where no run recorded one; empty for controls."""
    model = (reranker.get("identity") or {}).get("model") or reranker.get("params", {}).get("model")
    if isinstance(model, dict):
        revision = str(model.get("revision") or "").removeprefix("sha256:")[:12]
        return f"{model.get('name', '')}@{revision}" if revision else str(model.get("name", ""))
    return str(model or "")


def _neighbour(
    a: Scorecard, b: Scorecard, metric: str, seed: int
) -> tuple[float, tuple[float, float], float, int]:
    """Macro mean difference a - b of ``metric`` (in its better direction's sign as stored),
    its stratified interval, the two-sided sign-flip p and the queries paired."""
    groups = []
    for task in a.tasks:
        if task not in b.tasks:
            continue
        va, vb = a.baseline(task).vector(metric), b.baseline(task).vector(metric)
        if set(va) != set(vb):
            raise HarnessError(
                f"{a.origin} and {b.origin}: task {task!r} has other queries in each; "
                "scorecards of one suite must rank the same queries"
            )
        d = np.array([va[q] - vb[q] for q in va], dtype=np.float64)
        groups.append(d[~np.isnan(d)])
    groups = [g for g in groups if g.size]
    if not groups:
        return math.nan, (math.nan, math.nan), 1.0, 0
    diff, low, high = bootstrap_macro_mean_ci(groups, seed=seed)
    # weights make the plain mean of the pooled values the macro mean; flipping signs of
    # scaled differences is the same symmetric null
    total = sum(g.size for g in groups)
    pooled = np.concatenate([g * total / (len(groups) * g.size) for g in groups])
    p = sign_flip_pvalue(pooled, alternative="two-sided", seed=seed)
    return diff, (low, high), p, total


# ---------------------------------------------------------------- rendering


def _number(value: float) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.4f}"


def _cell_text(cell: Cell, with_ci: bool = True) -> str:
    if cell.text:
        return cell.text
    text = _number(cell.value)
    if with_ci and cell.ci is not None and not math.isnan(cell.value):
        text += f" [{_number(cell.ci[0])}, {_number(cell.ci[1])}]"
    return text


def _test_text(test: Neighbour | None) -> str:
    if test is None:
        return ""
    star = " *" if test.significant else ""
    return f"{test.diff:+.4f}, p={test.p_holm:.3g}{star}"


def _title(column: Column) -> str:
    arrow = {True: " ↑", False: " ↓"}.get(column.higher_is_better, "")  # type: ignore[arg-type]
    return column.title + arrow


def _explanation(board: Leaderboard) -> list[str]:
    suite = board.suite
    return [
        f"Suite {suite['name']} v{suite['version']} (sha256 {suite['sha256'][:16]}). "
        f"Rows ordered by {board.primary} overall (mean of task means, each task weighs the "
        "same; 95% stratified bootstrap intervals in brackets).",
        f"'{board.primary} vs next': the macro difference to the row below, with a two-sided "
        "paired sign-flip test over the queries of the tasks both ran, Holm-adjusted across "
        f"neighbour pairs (* = p < {ALPHA}). Costs: reranking time of all tasks' orders "
        "(latency per candidate set x queries) and model forward passes per order.",
    ]


def render_markdown(board: Leaderboard) -> str:
    lines = [f"# Leaderboard: {board.suite['name']} v{board.suite['version']}", ""]
    lines += [*(_explanation(board)), ""]
    header = ["#", "reranker", "model", *(_title(c) for c in board.columns)]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---:", "---", "---"] + ["---:"] * len(board.columns)) + "|")
    for rank, (row, test) in enumerate(zip(board.rows, board.neighbours, strict=True), 1):
        cells = [_md(_cell_or_test(row, c, test)) for c in board.columns]
        lines.append("| " + " | ".join([str(rank), _md(row.label), _md(row.model), *cells]) + " |")
    if board.notes:
        lines += ["", *(f"- note: {n}" for n in board.notes)]
    return "\n".join(lines) + "\n"


def _cell_or_test(row: Row, column: Column, test: Neighbour | None) -> str:
    if column.group == "test":
        return _test_text(test)
    return _cell_text(row.cells[column.key])


def _md(text: str) -> str:
    return text.replace("|", "\\|")


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
    "↑": r"$\uparrow$", "↓": r"$\downarrow$", "≥": r"$\geq$",
}  # fmt: skip


def _tex(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def render_latex(board: Leaderboard) -> str:
    """A booktabs table (values without intervals; they are in the HTML and Markdown)."""
    columns = [c for c in board.columns if c.group != "test"]
    head = " & ".join(["reranker", *(_tex(_title(c)) for c in columns), "vs next"])
    lines = [
        f"% leaderboard of suite {board.suite['name']} v{board.suite['version']} "
        f"(sha256 {board.suite['sha256']}); needs \\usepackage{{booktabs}}",
        "\\begin{tabular}{l" + "r" * (len(columns) + 1) + "}",
        "\\toprule",
        head + " \\\\",
        "\\midrule",
    ]
    for row, test in zip(board.rows, board.neighbours, strict=True):
        cells = [_tex(_cell_text(row.cells[c.key], with_ci=False)) for c in columns]
        lines.append(" & ".join([_tex(row.label), *cells, _tex(_test_text(test))]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


# Sorting: click a header; numbers by their data-sort value (n/a last), text by its text.
SORT_SCRIPT = """
document.querySelectorAll("table.board thead tr:last-child th").forEach((th, index) => {
  th.addEventListener("click", () => {
    const body = th.closest("table").tBodies[0];
    const down = th.dataset.dir !== "desc";
    th.closest("tr").querySelectorAll("th").forEach((h) => delete h.dataset.dir);
    th.dataset.dir = down ? "desc" : "asc";
    const key = (tr) => {
      const td = tr.children[index];
      return td.dataset.sort !== undefined ? parseFloat(td.dataset.sort) : td.textContent;
    };
    const rows = [...body.rows].sort((a, b) => {
      const x = key(a), y = key(b);
      if (typeof x === "number" && typeof y === "number") {
        if (isNaN(x) || isNaN(y)) return isNaN(x) - isNaN(y);
        return down ? y - x : x - y;
      }
      return down ? String(y).localeCompare(String(x)) : String(x).localeCompare(String(y));
    });
    rows.forEach((tr) => body.appendChild(tr));
  });
});
""".strip()
SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(SORT_SCRIPT.encode()).digest()).decode()
CSP = f"default-src 'none'; style-src 'unsafe-inline'; script-src '{SCRIPT_HASH}'"

_GROUPS = {
    "overall": "overall: mean of task means [95% CI]",
    "task": "per task",
    "cost": "cost",
    "test": "paired test",
}
_EXTRA_CSS = """
table.board th { cursor: pointer; user-select: none; }
table.board th[data-dir="desc"]::after { content: " ▼"; }
table.board th[data-dir="asc"]::after { content: " ▲"; }
td.sig { font-weight: 600; }
main { max-width: none; }
td .ci { display: block; color: var(--muted); font-size: 0.78rem; white-space: nowrap; }
th.group { text-align: center; cursor: default; }
"""


def render_html(board: Leaderboard) -> str:
    """One self-contained page: inline CSS, one inline script (allowed by its hash only)."""
    from harness.report.html import _CSS, embed_json

    title = f"Leaderboard: {board.suite['name']} v{board.suite['version']}"
    head = "".join(
        f"<th>{escape(t)}</th>"
        for t in ["#", "reranker", "model", *(_title(c) for c in board.columns)]
    )
    groups = '<th class="group" colspan="3"></th>' + "".join(
        f'<th class="group" colspan="{len(list(members))}">{escape(_GROUPS[name])}</th>'
        for name, members in itertools.groupby(board.columns, key=lambda c: c.group)
    )
    body = []
    for rank, (row, test) in enumerate(zip(board.rows, board.neighbours, strict=True), 1):
        tds = [
            f'<td class="num" data-sort="{rank}">{rank}</td>',
            f"<td>{escape(row.label)}</td>",
            f"<td>{escape(row.model)}</td>",
        ]
        for column in board.columns:
            if column.group == "test":
                value = math.nan if test is None else test.p_holm
                css = "num sig" if test is not None and test.significant else "num"
                tds.append(f'<td class="{css}" data-sort="{_sort(value)}">'
                           f"{escape(_test_text(test))}</td>")  # fmt: skip
                continue
            cell = row.cells[column.key]
            text = escape(_cell_text(cell, with_ci=False))
            if cell.ci is not None and not math.isnan(cell.value):
                text += f'<span class="ci">[{_number(cell.ci[0])}, {_number(cell.ci[1])}]</span>'
            tds.append(f'<td class="num" data-sort="{_sort(cell.value)}">{text}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    notes = "".join(f"<li>{escape(n)}</li>" for n in board.notes)
    data = {"suite": board.suite, "primary": board.primary, "rows": [r.label for r in board.rows]}
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}{_EXTRA_CSS}</style>\n</head>\n<body>\n"
        f"<main>\n<h1>{escape(title)}</h1>\n"
        + "".join(f"<p>{escape(p)}</p>\n" for p in _explanation(board))
        + '<p class="subtitle">Click a column header to sort by it.</p>\n'
        f'<div class="table-wrap"><table class="board" id="leaderboard"><thead><tr>{groups}</tr>'
        f"<tr>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(body)
        + "\n</tbody></table></div>\n"
        + (f"<ul>{notes}</ul>\n" if notes else "")
        + "<footer>Generated by harness suite leaderboard.</footer>\n</main>\n"
        f'<script type="application/json" id="harness-data">{embed_json(data)}</script>\n'
        f"<script>{SORT_SCRIPT}</script>\n</body>\n</html>\n"
    )


def _sort(value: float) -> str:
    return "NaN" if value is None or math.isnan(value) else repr(float(value))


@dataclass(frozen=True)
class WrittenLeaderboard:
    html: Path
    markdown: Path
    latex: Path
    board: Leaderboard


def write_leaderboard(card_paths: Sequence[Path], out: Path) -> WrittenLeaderboard:
    """Read scorecards, merge them and write ``out/leaderboard.{html,md,tex}``."""
    board = build_leaderboard([read_scorecard(p) for p in card_paths])
    ensure_writable_folder(out, "the leaderboard")
    files = WrittenLeaderboard(
        out / "leaderboard.html", out / "leaderboard.md", out / "leaderboard.tex", board
    )
    write_text_atomic(files.html, render_html(board))
    write_text_atomic(files.markdown, render_markdown(board))
    write_text_atomic(files.latex, render_latex(board))
    return files
