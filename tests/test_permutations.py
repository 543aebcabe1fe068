import os
import subprocess
import sys
from itertools import permutations

import numpy as np
import pytest
from scipy.stats import chisquare

from harness.errors import HarnessError
from harness.permutations import STRATEGIES, OrderLabel, plan_permutations


def _is_permutation(row: np.ndarray, n: int) -> bool:
    return sorted(row.tolist()) == list(range(n))


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "exhaustive"])
def test_every_plan_starts_with_identity_and_rows_are_permutations(strategy):
    plan = plan_permutations(strategy, "q1", 6, perms=5, seed=0, relevant_positions=[1, 4])
    expected = "reference" if strategy in ("random", "reversed") else "identity"
    assert plan.labels[0] == OrderLabel(expected)
    assert plan.labels[0].is_reference == (expected == "reference")
    assert plan.orders.shape[1] == 6
    assert plan.orders.dtype == np.int64
    np.testing.assert_array_equal(plan.orders[0], np.arange(6))
    assert all(_is_permutation(row, 6) for row in plan.orders)
    assert len(plan.labels) == len(plan.orders) == len(set(plan.labels))


def test_random_is_seeded_per_query_and_independent_of_other_queries():
    a = plan_permutations("random", "q1", 10, perms=20, seed=7)
    again = plan_permutations("random", "q1", 10, perms=20, seed=7)
    other_query = plan_permutations("random", "q2", 10, perms=20, seed=7)
    other_seed = plan_permutations("random", "q1", 10, perms=20, seed=8)
    np.testing.assert_array_equal(a.orders, again.orders)
    assert len(a) == 21  # 20 random orders + the identity reference
    assert not np.array_equal(a.orders, other_query.orders)
    assert not np.array_equal(a.orders, other_seed.orders)
    # Asking for more orders extends the same stream: the first 20 do not change.
    more = plan_permutations("random", "q1", 10, perms=30, seed=7)
    np.testing.assert_array_equal(more.orders[:21], a.orders)


def test_random_does_not_depend_on_python_hash_seed():
    code = (
        "from harness.permutations import plan_permutations;"
        "print(plan_permutations('random', 'query-x', 8, perms=3, seed=1).orders.tolist())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in ("1", "2")
    }
    assert len(outputs) == 1


def test_random_orders_are_uniform():
    # 6000 orders of 3 items: each of the 3! orders should appear ~1000 times.
    plan = plan_permutations("random", "uniform", 3, perms=6000, seed=3)
    counts = {p: 0 for p in permutations(range(3))}
    for row in plan.orders[1:]:
        counts[tuple(row.tolist())] += 1
    assert chisquare(list(counts.values())).pvalue > 0.001


def test_reversed():
    plan = plan_permutations("reversed", "q", 4, perms=99, seed=0)
    assert [str(label) for label in plan.labels] == ["reference", "reversed"]
    np.testing.assert_array_equal(plan.orders[1], [3, 2, 1, 0])


def test_cyclic_is_a_latin_square():
    n = 7
    plan = plan_permutations("cyclic", "q", n, perms=1, seed=0)
    assert len(plan) == n
    for candidate in range(n):
        positions = sorted(int(np.flatnonzero(row == candidate)[0]) for row in plan.orders)
        assert positions == list(range(n))


def test_sweep_moves_each_relevant_item_through_every_position():
    n, relevant = 6, [1, 4]
    plan = plan_permutations("sweep", "q", n, perms=1, seed=0, relevant_positions=relevant)
    assert len(plan) == 1 + len(relevant) * (n - 1)
    for item in relevant:
        moved = [i for i, label in enumerate(plan.labels) if label.item == item]
        rows = [0, *moved]
        positions = sorted(int(np.flatnonzero(plan.orders[r] == item)[0]) for r in rows)
        assert positions == list(range(n))
        for r in rows[1:]:
            assert plan.labels[r].position == int(np.flatnonzero(plan.orders[r] == item)[0])
        for r in rows:
            others = [int(c) for c in plan.orders[r] if c != item]
            assert others == [c for c in range(n) if c != item]


def test_sweep_without_relevant_items_is_the_identity_only():
    plan = plan_permutations("sweep", "q", 5, perms=1, seed=0, relevant_positions=[])
    assert plan.labels == (OrderLabel("identity"),)


def test_exhaustive_enumerates_all_orders_and_refuses_large_n():
    plan = plan_permutations("exhaustive", "q", 4, perms=1, seed=0)
    assert len(plan) == 24
    assert len({tuple(r) for r in plan.orders.tolist()}) == 24
    with pytest.raises(HarnessError, match="exhaustive strategy refused"):
        plan_permutations("exhaustive", "q", 9, perms=1, seed=0)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(HarnessError, match="unknown permutation strategy"):
        plan_permutations("shuffle", "q", 4, perms=1, seed=0)
    with pytest.raises(HarnessError, match="--perms must be at least 1"):
        plan_permutations("random", "q", 4, perms=0, seed=0)
    with pytest.raises(HarnessError, match="no candidates"):
        plan_permutations("random", "q", 0, perms=3, seed=0)


@pytest.mark.parametrize(
    "label",
    [
        OrderLabel("reference"),
        OrderLabel("identity"),
        OrderLabel("reversed"),
        OrderLabel("random", index=12),
        OrderLabel("cyclic", index=3),
        OrderLabel("exhaustive", index=23),
        OrderLabel("sweep", item=4, position=0),
    ],
)
def test_order_labels_round_trip_through_their_text_form(label):
    assert OrderLabel.parse(str(label)) == label


@pytest.mark.parametrize(
    "text", ["", "random", "random:x", "sweep:3", "sweep:a@1", "shuffle:1", "identity:2"]
)
def test_malformed_order_labels_are_refused(text):
    with pytest.raises(ValueError, match="not an order label"):
        OrderLabel.parse(text)


def test_order_label_parameters_are_checked():
    with pytest.raises(ValueError):
        OrderLabel("random")  # a random order needs its index
    with pytest.raises(ValueError):
        OrderLabel("sweep", index=1)
