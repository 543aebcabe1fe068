"""Render a :class:`Report` as Markdown for a pull-request comment.

The same sections and tables as the HTML page; plots are linked as PNG files written next to
the Markdown (``<stem>_figures/``), since a comment cannot carry embedded images. The run
data is not repeated here: the HTML page carries it.
"""

from __future__ import annotations

from harness.report.document import Report, Section, Table


def render_markdown(report: Report, *, figures_dir: str | None = None) -> str:
    lines = [f"## {report.title}", "", f"_{_escape(report.subtitle)}_", ""]
    for section in report.sections:
        lines += _section(section, figures_dir)
    return "\n".join(lines).rstrip() + "\n"


def _section(section: Section, figures_dir: str | None) -> list[str]:
    lines = [f"### {section.title}", ""]
    for paragraph in section.paragraphs:
        lines += [_escape(paragraph), ""]
    for table in section.tables:
        lines += [*table_lines(table), ""]
    for figure in section.figures:
        text = f"**{figure.title}.** {_escape(figure.caption)}"
        if figures_dir is not None:
            lines += [f"![{figure.title}]({figures_dir}/{figure.key}.png)", ""]
        lines += [text, ""]
    return lines


def table_lines(table: Table) -> list[str]:
    """A GitHub-flavoured Markdown table (numbers right-aligned), caption in bold above it."""
    lines = [f"**{_escape(table.caption)}**", ""] if table.caption else []
    lines.append("| " + " | ".join(_cell(h) for h in table.header) + " |")
    lines.append(
        "|"
        + "|".join("---:" if table.is_numeric(i) else "---" for i in range(len(table.header)))
        + "|"
    )
    lines += [
        "| "
        + " | ".join(
            f"**{_cell(c)}**" if table.is_strong(r, i) else _cell(c) for i, c in enumerate(row)
        )
        + " |"
        for r, row in enumerate(table.rows)
    ]
    return lines


def _cell(text: str) -> str:
    return _escape(text).replace("|", "\\|").replace("\n", " ") or " "


def _escape(text: str) -> str:
    """Keep plain text plain: neutralise characters Markdown would read as markup."""
    for char in ("\\", "*", "`", "<"):
        text = text.replace(char, "\\" + char)
    return text
