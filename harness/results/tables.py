"""``per_query`` and ``per_order`` held as columns: a run's per-query values without a dict
(and a float object) per value.

A 20,000-query run has 20,000 per-query rows of ~25 values and 420,000 per-order rows; as
Python dicts and lists they cost about 4 KB a query, held while the summary is computed and
copied again while ``results.json`` is written. Here each metric is one typed array (8 bytes
a value), and a row is built when it is read, so every reader of
``RunResults.per_query[q][metric]`` or ``RunResults.per_order[q].values[metric]`` works
unchanged. :class:`RenderedRows` renders a table's rows one at a time while the JSON streams.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Value = float | int


@dataclass(frozen=True)
class PerOrder:
    """One query's per-order values: ``order_index[i]`` is the order ``values[m][i]`` is for."""

    order_index: tuple[int, ...]
    values: Mapping[str, tuple[float, ...]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "order_index": list(self.order_index),
            **{k: list(v) for k, v in self.values.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PerOrder:
        index = tuple(int(i) for i in data["order_index"])
        values = {
            str(k): tuple(number(x) for x in v) for k, v in data.items() if k != "order_index"
        }
        for name, vector in values.items():
            if len(vector) != len(index):
                raise ValueError(f"{name} has {len(vector)} values for {len(index)} orders")
        return cls(index, values)


class _Columns:
    """Named typed columns that grow a row (or a block of rows) at a time: integers stay
    integers (``array('q')``) until a non-integer value arrives, then the column is floats."""

    def __init__(self) -> None:
        self.columns: dict[str, array] = {}
        self.rows = 0

    def extend(self, values: Mapping[str, Sequence[Value]], count: int) -> None:
        for name in values:
            if name not in self.columns:  # a metric the earlier rows lack is NaN there
                self.columns[name] = array("d", [math.nan] * self.rows) if self.rows else array("q")
        for name, column in self.columns.items():
            block = values.get(name)
            if block is None:
                block = [math.nan] * count
            elif len(block) != count:
                raise ValueError(f"{name} has {len(block)} values for {count} rows")
            if column.typecode == "q" and not all(_is_int(x) for x in block):
                column = self.columns[name] = array("d", column)
            column.extend(float(x) if column.typecode == "d" else int(x) for x in block)
        self.rows += count

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Columns):
            return NotImplemented
        return self.columns.keys() == other.columns.keys() and all(
            _same(column, other.columns[name]) for name, column in self.columns.items()
        )


class _QueryRows:
    """Rows grouped by query, the queries in the order they were added: each query's span of
    rows and the named columns over every row. The two tables below add how a query's span
    reads back."""

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._where: dict[str, int] = {}
        self._starts = array("q", [0])  # query k's rows are starts[k]:starts[k + 1]
        self._columns = _Columns()

    def _add(self, query_id: str, values: Mapping[str, Sequence[Value]], count: int) -> None:
        if query_id in self._where:
            raise ValueError(f"query {query_id} has two rows")
        self._columns.extend(values, count)
        self._where[query_id] = len(self._ids)
        self._ids.append(query_id)
        self._starts.append(self._starts[-1] + count)

    def _span(self, query_id: str) -> slice:
        k = self._where[query_id]
        return slice(self._starts[k], self._starts[k + 1])

    def _same_rows(self, other: _QueryRows) -> bool:
        """Same queries, spans and values (NaN equal to NaN: rows read back as new floats,
        unlike ``math.nan`` in a dict)."""
        return (
            self._ids == other._ids
            and self._starts == other._starts
            and self._columns == other._columns
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    __hash__ = None  # type: ignore[assignment]


class PerQueryTable(_QueryRows, Mapping[str, Mapping[str, Value]]):
    """``{query id: {metric: value}}`` stored as one array per metric (see the module)."""

    @classmethod
    def from_rows(cls, rows: Mapping[str, Mapping[str, Any]]) -> PerQueryTable:
        """A table of ``rows`` as JSON stores them: null is NaN, counts stay integers."""
        if isinstance(rows, PerQueryTable):
            return rows
        table = cls()
        for query_id, row in rows.items():
            table.append(str(query_id), {str(k): per_query_value(x) for k, x in row.items()})
        return table

    def append(self, query_id: str, row: Mapping[str, Value]) -> None:
        self._add(query_id, {name: [x] for name, x in row.items()}, 1)

    def column(self, metric: str) -> np.ndarray:
        """Every query's value of ``metric`` as floats, in row order (NaN where absent)."""
        column = self._columns.columns.get(metric)
        if column is None:
            return np.full(len(self), np.nan)
        return np.asarray(column, dtype=float)

    def __getitem__(self, query_id: str) -> dict[str, Value]:
        row = self._where[query_id]  # one row per query
        return {name: column[row] for name, column in self._columns.columns.items()}

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PerQueryTable):
            return self._same_rows(other)
        if isinstance(other, Mapping):
            return self._same_rows(PerQueryTable.from_rows(other))
        return NotImplemented


class PerOrderTable(_QueryRows, Mapping[str, PerOrder]):
    """``{query id: PerOrder}`` stored as flat arrays over every (query, order) row."""

    def __init__(self) -> None:
        super().__init__()
        self._order_index = array("q")

    @classmethod
    def from_rows(cls, rows: Mapping[str, Any]) -> PerOrderTable:
        """A table of ``{query id: PerOrder or its JSON dict}``."""
        if isinstance(rows, PerOrderTable):
            return rows
        table = cls()
        for query_id, entry in rows.items():
            orders = entry if isinstance(entry, PerOrder) else PerOrder.from_dict(entry)
            table.append(str(query_id), orders.order_index, orders.values)
        return table

    def append(
        self, query_id: str, order_index: Sequence[int], values: Mapping[str, Sequence[float]]
    ) -> None:
        self._add(query_id, values, len(order_index))
        self._order_index.extend(order_index)

    def __getitem__(self, query_id: str) -> PerOrder:
        rows = self._span(query_id)
        return PerOrder(
            tuple(self._order_index[rows]),
            {name: tuple(column[rows]) for name, column in self._columns.columns.items()},
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping) and not isinstance(other, PerOrderTable):
            other = PerOrderTable.from_rows(other)
        if not isinstance(other, PerOrderTable):
            return NotImplemented
        return self._same_rows(other) and self._order_index == other._order_index


class RenderedRows(Mapping[str, Any]):
    """``source`` with each row passed through ``render`` when it is read: a section that
    ``iter_json`` writes row by row, never held whole as plain JSON."""

    def __init__(self, source: Mapping[str, Any], render: Callable[[Any], Any]) -> None:
        self._source = source
        self._render = render

    def __getitem__(self, key: str) -> Any:
        return self._render(self._source[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._source)

    def __len__(self) -> int:
        return len(self._source)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def number(value: Any) -> float:
    """JSON null (how NaN is stored) back to NaN."""
    return math.nan if value is None else float(value)


def per_query_value(value: Any) -> Value:
    """A per-query value: counts stay integers, null is NaN."""
    return value if _is_int(value) else number(value)


def _same(a: array, b: array) -> bool:
    """Equal arrays, NaN equal to NaN (an integer column equals a float one of equal values)."""
    return len(a) == len(b) and bool(
        np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float), equal_nan=True)
    )
