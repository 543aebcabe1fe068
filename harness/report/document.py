"""The report as data: sections of plain-text tables, figures and paragraphs.

Building the content once and rendering it twice (``html.py``, ``markdown.py``) keeps the
browser page and the pull-request comment saying exactly the same thing. Cells and paragraphs
are plain text; each renderer escapes them for its own format.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...] = ()  # per column: right-align (numbers)
    caption: str = ""
    strong: frozenset[tuple[int, int]] = frozenset()  # (row, column) cells shown in bold
    key: str = ""  # file-name stem of its LaTeX and CSV exports (default: from the section)

    def is_numeric(self, column: int) -> bool:
        return column < len(self.numeric) and self.numeric[column]

    def is_strong(self, row: int, column: int) -> bool:
        return (row, column) in self.strong


FIGURE_FORMATS = ("svg", "pdf", "png")


@dataclass(frozen=True)
class Figure:
    """A plot in three formats: PNG (Markdown), SVG (the HTML page, papers), PDF (LaTeX)."""

    key: str  # file-name stem of STEM_figures/KEY.{png,svg,pdf}
    title: str
    caption: str
    png: bytes
    svg: bytes = b""
    pdf: bytes = b""
    width_in: float = 3.5  # printed width in inches (one column 3.5, two columns 7)

    def image(self, fmt: str) -> bytes:
        return {"png": self.png, "svg": self.svg, "pdf": self.pdf}[fmt]


@dataclass(frozen=True)
class Section:
    title: str
    paragraphs: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()
    figures: tuple[Figure, ...] = ()


@dataclass(frozen=True)
class Report:
    title: str
    subtitle: str
    sections: tuple[Section, ...]
    data: Mapping[str, Any] = field(default_factory=dict)  # embedded as machine-readable JSON

    @property
    def figures(self) -> tuple[Figure, ...]:
        return tuple(f for s in self.sections for f in s.figures)

    @property
    def tables(self) -> tuple[Table, ...]:
        return tuple(t for s in self.sections for t in s.tables)


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table cell: fixed decimals, thousands separators when large, n/a for NaN."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def fmt_signed(value: float, digits: int = 4) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:+.{digits}f}"


def fmt_p(value: float) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def with_interval(value: float, ci: Any) -> str:
    """``0.5123 [0.4410, 0.5820]``, or the bare value when there is no interval.

    A narrow column may wrap between the value and its interval, never inside the interval.
    """
    if not ci or len(ci) != 2:
        return fmt(value)
    return f"{fmt(value)} [{fmt(ci[0])},\u00a0{fmt(ci[1])}]"  # no break inside the interval
