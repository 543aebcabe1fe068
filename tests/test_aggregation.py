"""Rank aggregation against brute force over all n! rankings and textbook cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from harness.aggregation import (
    borda,
    kemeny,
    kemeny_rankings,
    pairwise_wins,
    positions,
    ranking_cost,
    reciprocal_rank_fusion,
)


def _kendall_distance(a, b) -> int:
    pos = {item: r for r, item in enumerate(b)}
    return sum(pos[a[x]] > pos[a[y]] for x in range(len(a)) for y in range(x + 1, len(a)))


def _brute_force(weights: np.ndarray) -> float:
    return min(ranking_cost(p, weights) for p in itertools.permutations(range(len(weights))))


def _random_rankings(rng, m: int, n: int) -> list[list[int]]:
    return [list(rng.permutation(n)) for _ in range(m)]


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7])
def test_exact_kemeny_matches_brute_force_on_rankings(n):
    rng = np.random.default_rng(n)
    for _ in range(4):
        rankings = _random_rankings(rng, int(rng.integers(1, 8)), n)
        consensus = kemeny_rankings(rankings)
        assert consensus.exact
        assert sorted(consensus.order) == list(range(n))
        total = sum(_kendall_distance(consensus.order, r) for r in rankings)
        assert consensus.cost == pytest.approx(total)
        assert consensus.cost == pytest.approx(_brute_force(pairwise_wins(rankings)))


@pytest.mark.parametrize("n", [4, 6, 7])
def test_exact_kemeny_matches_brute_force_on_fractional_weights(n):
    """GPI's weights are preference shares p_ij with p_ij + p_ji = 1, not counts."""
    rng = np.random.default_rng(100 + n)
    for _ in range(4):
        upper = np.triu(rng.random((n, n)), k=1)
        weights = upper + np.tril(1 - upper.T, k=-1)
        np.fill_diagonal(weights, 0.0)
        assert kemeny(weights).cost == pytest.approx(_brute_force(weights))


def test_local_search_is_a_local_optimum_never_worse_than_its_start():
    rng = np.random.default_rng(7)
    rankings = _random_rankings(rng, 9, 12)
    weights = pairwise_wins(rankings)
    exact = kemeny(weights)
    local = kemeny(weights, exact_limit=0)
    assert not local.exact and exact.exact
    assert exact.cost <= local.cost + 1e-9
    # The start is the net-wins order, which for full rankings is the Borda order.
    assert local.cost <= ranking_cost(borda(rankings), weights) + 1e-9
    assert_no_single_move_improves(local.order, weights, local.cost)


def test_local_search_finds_the_consensus_when_all_rankings_agree():
    ranking = [3, 0, 4, 1, 2]
    consensus = kemeny(pairwise_wins([ranking] * 3), exact_limit=0)
    assert consensus.order == tuple(ranking) and consensus.cost == 0


def test_condorcet_cycle_costs_one_disagreement_per_ranking_pair():
    # The classic 3-voter cycle: every ranking of {0,1,2} has total Kendall distance >= 4.
    rankings = [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    assert kemeny_rankings(rankings).cost == 4


def test_borda_and_rrf_textbook_case():
    rankings = [[0, 1, 2], [0, 2, 1], [1, 0, 2]]
    # Borda points: item0 = 2+2+1 = 5, item1 = 1+0+2 = 3, item2 = 0+1+0 = 1.
    assert borda(rankings) == (0, 1, 2)
    # RRF (k=60): item0 = 1/61+1/61+1/62, item1 = 1/62+1/63+1/61, item2 = 1/63+1/62+1/63.
    assert reciprocal_rank_fusion(rankings) == (0, 1, 2)
    # k = 0 is top-heavy: one first place (1) beats two seconds (1/2 + 1/2) only on ties -> index.
    assert reciprocal_rank_fusion([[0, 1], [1, 0]], k=0) == (0, 1)


def test_positions_inverts_rankings_and_bad_input_is_refused():
    assert positions([[2, 0, 1]]).tolist() == [[1, 2, 0]]
    with pytest.raises(ValueError, match="permutation"):
        borda([[0, 0, 1]])
    with pytest.raises(ValueError, match="at least one"):
        borda([])
    with pytest.raises(ValueError, match="square"):
        kemeny(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="k must be"):
        reciprocal_rank_fusion([[0, 1]], k=-1)


def test_local_search_reaches_a_local_optimum_above_the_exact_limit():
    """At 60 items (the local-search regime GPI uses for long lists) no single move improves."""
    rng = np.random.default_rng(11)
    base = rng.permutation(60)
    rankings = [base] + [rng.permutation(60) for _ in range(4)]
    weights = pairwise_wins(rankings) / len(rankings)
    local = kemeny(weights)
    assert not local.exact
    assert local.cost <= ranking_cost(borda(rankings), weights) + 1e-9
    assert_no_single_move_improves(local.order, weights, local.cost)


def assert_no_single_move_improves(order, weights, cost) -> None:
    """Every removal and reinsertion of one item costs at least ``cost``."""
    order = list(order)
    for a in range(len(order)):
        for b in range(len(order)):
            moved = order.copy()
            moved.insert(b, moved.pop(a))
            assert ranking_cost(moved, weights) >= cost - 1e-9


def _reference_local_search(start: list[int], weights: np.ndarray) -> list[int]:
    """Best single-item move until none lowers the cost, written plainly: every move's cost
    change from the gathered weights, the best (first in reading order among those within
    1e-12) applied. ``kemeny``'s search must take exactly these moves."""
    order = list(start)
    n = len(order)
    while True:
        shown = weights[np.ix_(order, order)]
        gain = shown.T - shown  # gain[a, b]: change when order[a] jumps over order[b] upwards
        prefix = np.zeros((n, n + 1))
        np.cumsum(gain, axis=1, out=prefix[:, 1:])
        moves = []  # (reading position, a, b, change)
        for a in range(n):
            up = [(a - 1 - b, b, prefix[a, a] - prefix[a, b]) for b in range(a - 1, -1, -1)]
            down = [(b - 1, b, prefix[a, a + 1] - prefix[a, b + 1]) for b in range(a + 1, n)]
            moves += [(a * n + pos, a, b, change) for pos, b, change in up + down]
        best = min(change for *_, change in moves)
        if not best < -1e-12:
            return order
        _, a, b, _ = min(m for m in moves if m[3] <= best + 1e-12)
        order.insert(b, order.pop(a))


@pytest.mark.parametrize("seed", range(4))
def test_local_search_takes_the_reference_moves(seed):
    """Above the exact limit, kemeny's vectorised search ends where the plain one does (the
    same order, hence the same cost), on count and share weights, random and near-agreeing."""
    rng = np.random.default_rng(seed)
    for _ in range(3):
        n, m = int(rng.integers(31, 45)), int(rng.integers(2, 12))
        base = rng.permutation(n)
        share = rng.random()
        rankings = [base if rng.random() < share else rng.permutation(n) for _ in range(m)]
        weights = pairwise_wins(rankings) / (m if rng.random() < 0.5 else 1)
        start = sorted(range(n), key=lambda i: (-(weights[i].sum() - weights[:, i].sum()), i))
        assert kemeny(weights).order == tuple(_reference_local_search(start, weights))
