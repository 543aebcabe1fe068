import os
import subprocess
import sys
from itertools import permutations

import numpy as np
import pytest
from scipy.stats import chisquare

from harness.errors import HarnessError
from harness.permutations import STRATEGIES, OrderLabel, Pin, plan_permutations, read_templates


def _is_permutation(row: np.ndarray, n: int) -> bool:
    return sorted(row.tolist()) == list(range(n))


@pytest.mark.parametrize(
    "strategy", [s for s in STRATEGIES if s not in ("exhaustive", "templates")]
)
def test_every_plan_starts_with_identity_and_rows_are_permutations(strategy):
    plan = plan_permutations(strategy, "q1", 6, perms=5, seed=0, relevant_positions=[1, 4])
    expected = "reference" if strategy in ("random", "reversed", "fixed") else "identity"
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


# --- fixed, sweep with repeats, templates, identity repeats -------------------------------


def test_fixed_pins_one_item_and_shuffles_the_rest_with_a_seeded_stream():
    plan = plan_permutations("fixed", "q", 8, perms=1, seed=0, pin=Pin(3, 5), count=12)
    assert plan.labels[0] == OrderLabel("reference")
    assert [str(label) for label in plan.labels[1:3]] == ["fixed:3@5#0", "fixed:3@5#1"]
    assert len(plan) == 13
    assert all(row[5] == 3 and _is_permutation(row, 8) for row in plan.orders[1:])
    assert len({tuple(row) for row in plan.orders[1:].tolist()}) > 6  # the rest is shuffled
    more = plan_permutations("fixed", "q", 8, perms=1, seed=0, pin=Pin(3, 5), count=20)
    np.testing.assert_array_equal(more.orders[:13], plan.orders)  # a stream, extended
    other = plan_permutations("fixed", "q2", 8, perms=1, seed=0, pin=Pin(3, 5), count=12)
    assert not np.array_equal(other.orders, plan.orders)


def test_fixed_pin_relevant_negative_positions_and_errors():
    plan = plan_permutations(
        "fixed", "q", 6, perms=1, seed=0, relevant_positions=[4, 2], pin=Pin.parse("relevant@-1")
    )
    assert plan.labels[1] == OrderLabel("fixed", item=2, position=5, draw=0)
    assert len(plan) == 21  # default count 20 + reference
    with pytest.raises(HarnessError, match="no candidate judged at or above"):
        plan_permutations("fixed", "q", 6, perms=1, seed=0, pin=Pin("relevant", 0))
    with pytest.raises(HarnessError, match="has 6 candidates"):
        plan_permutations("fixed", "q", 6, perms=1, seed=0, pin=Pin(6, 0))
    for bad in ("3", "x@1", "1@y", "-1@0"):
        with pytest.raises(HarnessError, match="--pin"):
            Pin.parse(bad)


def test_sweep_with_repeats_adds_shuffled_completions_per_position():
    n = 5
    plan = plan_permutations("sweep", "q", n, perms=1, seed=0, relevant_positions=[1], count=3)
    base = plan_permutations("sweep", "q", n, perms=1, seed=0, relevant_positions=[1])
    # count 1 is today's sweep, unchanged; count 3 adds 2 shuffled completions per position
    assert [lab for lab in plan.labels if lab.draw is None] == list(base.labels)
    assert len(plan) == len(base) + 2 * n
    for row, label in zip(plan.orders, plan.labels, strict=True):
        if label.family == "sweep":
            assert row[label.position] == label.item
    drawn = [lab for lab in plan.labels if lab.draw is not None]
    assert {(lab.position, lab.draw) for lab in drawn} == {(p, d) for p in range(n) for d in (1, 2)}


def test_templates_fill_null_positions_by_a_seeded_shuffle(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("# pinned ends\n[4, null, null, null, 0]\n\n[0, 1, 2, 3, 4]\n[null, 2]\n")
    templates = read_templates(path)
    assert [t.source for t in templates] == [f"{path}:2", f"{path}:4", f"{path}:5"]
    plan = plan_permutations("templates", "q", 5, perms=1, seed=0, templates=templates, count=3)
    assert [str(label) for label in plan.labels] == [
        "reference",
        "template:0#0", "template:0#1", "template:0#2",
        "template:1#0",  # a full template needs no completions
        "template:2#0", "template:2#1", "template:2#2",
    ]  # fmt: skip
    for row, label in zip(plan.orders, plan.labels, strict=True):
        assert _is_permutation(row, 5)
        if label.family == "template" and label.index == 0:
            assert row[0] == 4 and row[4] == 0
        if label.family == "template" and label.index == 2:
            assert row[1] == 2
    np.testing.assert_array_equal(plan.orders[4], [0, 1, 2, 3, 4])
    again = plan_permutations("templates", "q", 5, perms=1, seed=0, templates=templates, count=3)
    np.testing.assert_array_equal(again.orders, plan.orders)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[0, 1]\n{bad\n", r"t.jsonl:2: not JSON"),
        ('[0, "a"]\n', r"t.jsonl:1: entries must be candidate indices"),
        ("[0, 0]\n", r"t.jsonl:1: candidate 0 appears more than once"),
        ("[]\n", r"t.jsonl:1: a template must be a non-empty JSON array"),
        ("[-2]\n", r"t.jsonl:1: candidate index -2 is negative"),
        ("[true]\n", r"t.jsonl:1: entries must be"),
        ("# nothing\n", r"holds no templates"),
    ],
)
def test_malformed_templates_are_one_line_errors_naming_file_and_line(tmp_path, text, message):
    path = tmp_path / "t.jsonl"
    path.write_text(text)
    with pytest.raises(HarnessError, match=message) as info:
        read_templates(path)
    assert "\n" not in str(info.value)


def test_templates_that_do_not_fit_a_query_name_the_line_and_query(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("[0, 1, 2, 3, 4, 5]\n[9]\n")
    templates = read_templates(path)
    with pytest.raises(HarnessError, match=r"t.jsonl:1: template has 6 positions but query 'q'"):
        plan_permutations("templates", "q", 5, perms=1, seed=0, templates=templates)
    with pytest.raises(HarnessError, match=r"t.jsonl:2: candidate 9 is out of range"):
        plan_permutations("templates", "q", 5, perms=1, seed=0, templates=templates[1:])
    with pytest.raises(HarnessError, match="needs --templates"):
        plan_permutations("templates", "q", 5, perms=1, seed=0)


@pytest.mark.parametrize("strategy", ["random", "cyclic", "reversed"])
def test_repeats_append_identity_rows_outside_the_design(strategy):
    plain = plan_permutations(strategy, "q", 6, perms=4, seed=0)
    plan = plan_permutations(strategy, "q", 6, perms=4, seed=0, repeats=3)
    np.testing.assert_array_equal(plan.orders[: len(plain)], plain.orders)
    assert plan.labels[len(plain) :] == tuple(OrderLabel("repeat", index=r) for r in (1, 2, 3))
    for row in plan.orders[len(plain) :]:
        np.testing.assert_array_equal(row, np.arange(6))
    assert [label.in_design for label in plan.labels].count(False) == 3 + (strategy != "cyclic")


@pytest.mark.parametrize(
    "label",
    [
        OrderLabel("fixed", item=2, position=19, draw=4),
        OrderLabel("sweep", item=4, position=0, draw=2),
        OrderLabel("template", index=3, draw=0),
        OrderLabel("repeat", index=2),
    ],
)
def test_new_order_labels_round_trip(label):
    assert OrderLabel.parse(str(label)) == label


@pytest.mark.parametrize(
    "text", ["fixed:2@3", "template:1", "repeat:0", "repeat", "sweep:1@2#0", "random:1#2"]
)
def test_new_malformed_order_labels_are_refused(text):
    with pytest.raises(ValueError, match="not an order label"):
        OrderLabel.parse(text)


def test_labels_sort_even_when_some_have_no_draw():
    labels = [
        OrderLabel("sweep", item=1, position=2, draw=1),
        OrderLabel("sweep", item=1, position=2),
    ]
    assert sorted(labels)[0].draw is None


def test_a_design_too_large_is_refused_before_any_order_is_built():
    with pytest.raises(HarnessError, match=r"would show 3,000,001 orders \(limit 50,000"):
        plan_permutations(
            "sweep", "q", 100, perms=0, seed=0, relevant_positions=range(30), count=1000
        )
