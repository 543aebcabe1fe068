"""PPI and GPI on hand-computed textbook cases, against brute force, and the new pairwise
stability quantities (Spearman, exact top-k set agreement, best relevant rank, tie rate)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from harness.metrics.preference import (
    global_preference_inconsistency,
    pairwise_preference_instability,
    position_bucket,
    preference_range,
    preference_shares,
)
from harness.metrics.stability import (
    best_relevant_ranks,
    pairwise_stability,
    spearman_rho,
    tie_rate,
    top_k_set_agreement,
)


def _random_orders(n: int, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([rng.permutation(n) for _ in range(count)])


def test_buckets_split_the_list_in_thirds():
    assert position_bucket(np.arange(20), 20).tolist() == [0] * 7 + [1] * 7 + [2] * 6
    assert position_bucket(np.arange(3), 3).tolist() == [0, 1, 2]
    assert position_bucket(np.arange(2), 2).tolist() == [0, 1]  # min(.., B - 1) never needed
    assert position_bucket(np.arange(4), 4, 2).tolist() == [0, 0, 1, 1]


def test_a_reranker_that_copies_its_input_has_ppi_one_and_an_invariant_one_zero():
    shown = _random_orders(9, 300, seed=1)
    # Copying: i is above j exactly when it was shown above j, so a pair's preference is 1 in
    # every cell where i's bucket is earlier and 0 where it is later: max - min = 1.
    assert pairwise_preference_instability(shown, shown) == 1.0
    invariant = np.tile(np.arange(9), (300, 1))
    assert pairwise_preference_instability(shown, invariant) == 0.0


def test_ppi_hand_computed_three_items():
    # n = 3, so each position is its own bucket.
    shown = np.array([[0, 1, 2], [0, 1, 2], [1, 0, 2], [1, 0, 2]])
    output = np.array([[0, 1, 2], [1, 0, 2], [0, 1, 2], [0, 1, 2]])
    # pair (0,1): cell (0,1) -> 0 above 1 in 1 of 2 = 0.5; cell (1,0) -> 2 of 2 = 1; range 0.5
    # pair (0,2): cells (0,2) and (1,2) both 1 -> 0; pair (1,2): cells (1,2), (0,2) both 1 -> 0
    assert pairwise_preference_instability(shown, output) == pytest.approx(0.5 / 3)
    # reversing every shown order of a copying reranker: all pairs flip between two cells
    both = np.array([[0, 1, 2], [2, 1, 0]])
    assert pairwise_preference_instability(both, both) == 1.0


def test_cells_below_the_minimum_observations_are_dropped():
    shown = np.array([[0, 1, 2], [0, 1, 2], [2, 1, 0]])
    assert pairwise_preference_instability(shown, shown) == 1.0
    # with 2 observations needed, only one cell per pair is left: no pair qualifies
    assert math.isnan(pairwise_preference_instability(shown, shown, minimum_bucket_observations=2))
    with pytest.raises(ValueError, match="minimum_bucket_observations"):
        pairwise_preference_instability(shown, shown, minimum_bucket_observations=0)


def _ppi_by_loops(shown, output, num_buckets=3, minimum=1):
    """The definition written out pair by pair with dictionaries (independent of the kernel)."""
    n = len(shown[0])
    values = []
    for i, j in itertools.combinations(range(n), 2):
        cells: dict[tuple[int, int], list[int]] = {}
        for s, o in zip(shown, output, strict=True):
            s, o = list(s), list(o)
            key = (
                min(s.index(i) * num_buckets // n, num_buckets - 1),
                min(s.index(j) * num_buckets // n, num_buckets - 1),
            )
            cells.setdefault(key, []).append(int(o.index(i) < o.index(j)))
        shares = [sum(v) / len(v) for v in cells.values() if len(v) >= minimum]
        if len(shares) >= 2:
            values.append(max(shares) - min(shares))
    return sum(values) / len(values) if values else math.nan


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("buckets", "minimum"), [(3, 1), (3, 3), (2, 2), (4, 1)])
def test_ppi_matches_the_definition_on_a_partly_order_sensitive_reranker(seed, buckets, minimum):
    n = 10
    shown = _random_orders(n, 40, seed)
    rng = np.random.default_rng(100 + seed)
    # a noisy reranker: sorts by true quality (-index) plus a bonus for being shown early
    output = np.array(
        [np.argsort(np.arange(n) - 6.0 * np.argsort(s) / n + rng.normal(0, 1.5, n)) for s in shown]
    )
    expected = _ppi_by_loops(shown, output, buckets, minimum)
    got = pairwise_preference_instability(
        shown, output, num_buckets=buckets, minimum_bucket_observations=minimum
    )
    assert got == pytest.approx(expected, abs=1e-12)


def test_preference_range_treats_each_cell_on_its_own():
    cells = np.array([[0, 0], [1, 0], [2, 0]])
    above = np.array([[True, True], [False, True], [True, True]])
    # pair 0: cells 0,1,2 with shares 1, 0, 1 -> 1; pair 1: one cell only -> skipped
    assert preference_range(cells, above) == 1.0


def test_gpi_is_zero_when_every_order_agrees_and_half_for_a_copying_reranker_over_all_orders():
    same = np.tile([2, 0, 3, 1], (5, 1))
    assert global_preference_inconsistency(same) == 0.0
    # copying over all 3! orders: p_ij = 1/2 for every pair, any ranking costs 3 * 1/2
    every = np.array(list(itertools.permutations(range(3))))
    assert global_preference_inconsistency(every) == pytest.approx(0.5)


def test_gpi_of_a_preference_cycle():
    # three rotations: 0>1, 1>2 and 2>0 each hold in 2 of 3 orders (a Condorcet cycle); the
    # best ranking must break one of them: cost 1/3 + 1/3 + 2/3 = 4/3 over 3 pairs.
    cycle = np.array([[0, 1, 2], [1, 2, 0], [2, 0, 1]])
    assert global_preference_inconsistency(cycle) == pytest.approx(4 / 9)


def _gpi_brute_force(output: np.ndarray) -> float:
    n = output.shape[1]
    rank = np.argsort(output, axis=1)
    p = np.array([[np.mean(rank[:, i] < rank[:, j]) for j in range(n)] for i in range(n)])
    best = min(
        sum(1 - p[order[a], order[b]] for a in range(n) for b in range(a + 1, n))
        for order in itertools.permutations(range(n))
    )
    return best / (n * (n - 1) / 2)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7])
@pytest.mark.parametrize("seed", range(3))
def test_gpi_equals_brute_force_over_all_rankings(n, seed):
    rng = np.random.default_rng(seed * 10 + n)
    # a mix of agreeing and random outputs, so preferences are partly cyclic
    base = rng.permutation(n)
    outputs = [base if rng.random() < 0.4 else rng.permutation(n) for _ in range(9)]
    output = np.array(outputs)
    assert global_preference_inconsistency(output) == pytest.approx(_gpi_brute_force(output))


def test_preference_shares_and_undefined_cases():
    shares = preference_shares(np.array([[0, 1], [0, 1], [1, 0]]))
    np.testing.assert_allclose(shares, [[0, 2 / 3], [1 / 3, 0]])
    assert math.isnan(global_preference_inconsistency(np.array([[0]])))
    assert math.isnan(global_preference_inconsistency(np.array([[1, 0, 2]])))  # one order
    assert math.isnan(pairwise_preference_instability(np.array([[0]]), np.array([[0]])))
    with pytest.raises(ValueError, match="permutation"):
        pairwise_preference_instability(np.array([[0, 0]]), np.array([[0, 1]]))


def test_spearman_textbook_cases_and_scipy():
    assert spearman_rho("abc", "abc") == 1.0
    assert spearman_rho("abcd", "dcba") == -1.0
    assert spearman_rho("abc", "bac") == pytest.approx(0.5)  # d = (1, 1, 0): 1 - 12/24
    rng = np.random.default_rng(0)
    ids = [f"d{i}" for i in range(15)]
    rankings = [tuple(np.array(ids)[rng.permutation(15)]) for _ in range(6)]
    stats = pairwise_stability(rankings)
    expected = []
    for a, b in itertools.combinations(rankings, 2):
        ra = [a.index(d) for d in ids]
        rb = [b.index(d) for d in ids]
        expected.append(spearmanr(ra, rb).statistic)
        assert spearman_rho(a, b) == pytest.approx(expected[-1])
    assert stats["spearman"] == pytest.approx(np.mean(expected))


def test_exact_top_k_set_agreement():
    assert top_k_set_agreement("abcde", "bacde", k=2) == 1.0
    assert top_k_set_agreement("abcde", "acbde", k=2) == 0.0
    stats = pairwise_stability(["abcd", "bacd", "cabd"], k=2)
    # pairs: (abcd, bacd) same {a,b}; (abcd, cabd) {a,b} vs {c,a}; (bacd, cabd) differ
    assert stats["top2_set_agreement"] == pytest.approx(1 / 3)
    assert stats["top2_jaccard"] == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)


def test_best_relevant_rank_and_tie_rate():
    ranks = best_relevant_ranks(["abcd", "cbda", "dcba"], {"b", "d"})
    np.testing.assert_array_equal(ranks, [2, 2, 1])
    assert math.isnan(best_relevant_ranks(["ab"], set())[0])
    assert tie_rate([3.0, 2.0, 1.0]) == 0.0
    assert tie_rate([1.0, 1.0, 1.0]) == 1.0
    assert tie_rate([5.0, 1.0, 1.0, 0.5]) == pytest.approx(1 / 3)
    assert math.isnan(tie_rate([1.0]))
