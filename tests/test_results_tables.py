"""Per-query and per-order values held as columns read back exactly as the rows they were
given: integers stay integers, NaN stays NaN, and the JSON written row by row is the JSON of
the plain rows."""

from __future__ import annotations

import json
import math

import pytest

from harness.files import dumps_json
from harness.results.tables import PerOrder, PerOrderTable, PerQueryTable, RenderedRows

ROWS = {
    "q1": {"n_candidates": 20, "ndcg@10": 0.5, "tie_rate": math.nan},
    "q2": {"n_candidates": 7, "ndcg@10": 1.0, "tie_rate": 0.25},
}


def test_per_query_rows_read_back_as_given():
    table = PerQueryTable.from_rows(ROWS)
    assert list(table) == ["q1", "q2"] and len(table) == 2
    row = table["q1"]
    assert list(row) == ["n_candidates", "ndcg@10", "tie_rate"]  # the rows' key order
    assert row["n_candidates"] == 20 and type(row["n_candidates"]) is int
    assert row["ndcg@10"] == 0.5 and math.isnan(row["tie_rate"])
    assert table["q2"] == ROWS["q2"]
    assert table.column("ndcg@10").tolist() == [0.5, 1.0]
    assert math.isnan(table.column("not a metric")[0])


def test_per_query_equality_treats_nan_as_equal():
    # NaN read back is a new float, so plain dict equality would call these rows different
    assert PerQueryTable.from_rows(ROWS) == PerQueryTable.from_rows(ROWS)
    assert PerQueryTable.from_rows(ROWS) == ROWS
    changed = {**ROWS, "q2": {**ROWS["q2"], "ndcg@10": 0.9}}
    assert PerQueryTable.from_rows(ROWS) != changed


def test_json_null_is_nan_and_a_count_becomes_a_float_only_when_a_float_arrives():
    table = PerQueryTable.from_rows(
        {"a": {"x": 1, "y": None}, "b": {"x": 2.5, "y": 3}}  # as results.json stores them
    )
    assert table["a"]["x"] == 1.0 and type(table["a"]["x"]) is float
    assert math.isnan(table["a"]["y"]) and table["b"]["y"] == 3.0


def test_a_metric_the_first_rows_lack_is_nan_there():
    table = PerQueryTable()
    table.append("a", {"x": 1.0})
    table.append("b", {"x": 2.0, "new": 5.0})
    assert math.isnan(table["a"]["new"]) and table["b"]["new"] == 5.0
    assert table["a"]["x"] == 1.0 and table["b"]["x"] == 2.0


def test_a_query_cannot_have_two_rows():
    table = PerQueryTable.from_rows(ROWS)
    with pytest.raises(ValueError, match="query q1 has two rows"):
        table.append("q1", {"ndcg@10": 0.0})
    orders = PerOrderTable()
    orders.append("q1", [0], {"ndcg@10": [1.0]})
    with pytest.raises(ValueError, match="query q1 has two rows"):
        orders.append("q1", [1], {"ndcg@10": [1.0]})


def test_per_order_rows_read_back_as_records():
    table = PerOrderTable()
    table.append("q1", [0, 1, 2], {"ndcg@10": [1.0, 0.5, math.nan], "mrr@10": [1.0, 1.0, 0.5]})
    table.append("q2", [3], {"ndcg@10": [0.0], "mrr@10": [0.0]})
    q1 = table["q1"]
    assert isinstance(q1, PerOrder) and q1.order_index == (0, 1, 2)
    assert q1.values["mrr@10"] == (1.0, 1.0, 0.5) and math.isnan(q1.values["ndcg@10"][2])
    assert table["q2"] == PerOrder((3,), {"ndcg@10": (0.0,), "mrr@10": (0.0,)})
    assert PerOrderTable.from_rows({q: table[q].to_dict() for q in table}) == table


def test_per_order_values_must_match_the_orders():
    with pytest.raises(ValueError, match="ndcg@10 has 1 values for 2 rows"):
        PerOrderTable().append("q", [0, 1], {"ndcg@10": [1.0]})


def test_rendered_rows_write_the_json_of_the_plain_rows():
    def plain(row):
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}

    table = PerQueryTable.from_rows(ROWS)
    streamed = dumps_json({"per_query": RenderedRows(table, plain)})
    assert streamed == dumps_json({"per_query": {q: plain(row) for q, row in ROWS.items()}})
    assert json.loads(streamed)["per_query"]["q1"] == {
        "n_candidates": 20,
        "ndcg@10": 0.5,
        "tie_rate": None,
    }
