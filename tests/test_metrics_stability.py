"""Stability kernels on textbook cases and against brute-force definitions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from harness.metrics.stability import (
    kendall_tau,
    pairwise_stability,
    rbo,
    shown_order_taus,
    spearman_rho,
    top1_agreement,
    top_k_jaccard,
    top_k_set_agreement,
)

IDS = [f"d{i}" for i in range(20)]


def brute_tau(a: list[str], b: list[str]) -> float:
    """(concordant - discordant) / (n choose 2); equals tau-b without ties."""
    pos = {d: r for r, d in enumerate(b)}
    s = sum(np.sign(pos[a[j]] - pos[a[i]]) for i, j in itertools.combinations(range(len(a)), 2))
    return s / (len(a) * (len(a) - 1) / 2)


def brute_rbo(a: list[str], b: list[str], p: float, k: int) -> float:
    """Eq. 32 of Webber et al. 2010 spelled out term by term with set intersections."""
    agree = [len(set(a[:d]) & set(b[:d])) / d for d in range(1, k + 1)]
    return agree[-1] * p**k + (1 - p) / p * sum(x * p**d for d, x in enumerate(agree, 1))


def swap(ranking: list[str], i: int) -> list[str]:
    out = list(ranking)
    out[i], out[i + 1] = out[i + 1], out[i]
    return out


def test_kendall_textbook():
    a = ["a", "b", "c", "d"]
    assert kendall_tau(a, a) == 1.0
    assert kendall_tau(a, a[::-1]) == pytest.approx(-1.0)
    assert kendall_tau(a, ["a", "c", "b", "d"]) == pytest.approx(2 / 3)  # 5 concordant, 1 not
    # no pair of candidates: undefined (SciPy's tau-b is 0/0 too), not perfect agreement
    assert math.isnan(kendall_tau(["a"], ["a"])) and math.isnan(kendall_tau([], []))
    assert math.isnan(spearman_rho(["a"], ["a"]))


def test_kendall_matches_brute_force():
    rng = np.random.default_rng(0)
    for n in (2, 3, 7, 30):
        for _ in range(10):
            a = list(rng.permutation(IDS)[:n])
            b = list(rng.permutation(a))
            assert kendall_tau(a, b) == pytest.approx(brute_tau(a, b))


def test_kendall_rejects_different_ids():
    for a, b in ((["a", "b"], ["a", "c"]), (["a", "b"], ["a"]), (["a", "a"], ["a", "b"])):
        with pytest.raises(ValueError):
            kendall_tau(a, b)


def test_rbo_textbook():
    assert rbo(IDS, IDS) == pytest.approx(1.0)
    assert rbo(IDS[:10], IDS[10:]) == 0.0
    # [A,B,C] vs [B,A,C], p=.9, k=3: X = 0, 2, 3 -> agreements 0, 1, 1
    # RBO = 1 * .9^3 + (.1/.9) * (0 * .9 + 1 * .81 + 1 * .729) = .729 + .171 = .9
    assert rbo(["A", "B", "C"], ["B", "A", "C"], depth=3) == pytest.approx(0.9)
    # [A,B,C,D] vs [A,B,D,C], k=4: agreements 1, 1, 2/3, 1
    # RBO = .6561 + (1/9) * (.9 + .81 + 2/3 * .729 + .6561) = .6561 + 2.8521 / 9 = .97300
    assert rbo(list("ABCD"), list("ABDC"), depth=4) == pytest.approx(0.973)
    # [A,B] vs [C,A], k=2: agreements 0, 1/2 -> .5 * .81 + (1/9) * (.5 * .81) = .45
    assert rbo(["A", "B"], ["C", "A"], depth=2) == pytest.approx(0.45)


def test_rbo_matches_brute_force_and_is_symmetric():
    rng = np.random.default_rng(1)
    for _ in range(50):
        a = list(rng.choice(IDS, 15, replace=False))
        b = list(rng.choice(IDS, 12, replace=False))
        p, depth = rng.uniform(0.5, 0.99), int(rng.integers(1, 16))
        k = min(depth, 12)
        assert rbo(a, b, p, depth) == pytest.approx(brute_rbo(a, b, p, k))
        assert rbo(a, b, p, depth) == pytest.approx(rbo(b, a, p, depth))


def test_rbo_is_top_heavy_where_tau_is_not():
    top, bottom = swap(IDS, 0), swap(IDS, 18)
    assert kendall_tau(IDS, top) == pytest.approx(kendall_tau(IDS, bottom))
    assert rbo(IDS, top, depth=20) < rbo(IDS, bottom, depth=20) < 1.0


def test_rbo_invalid():
    with pytest.raises(ValueError):
        rbo([], ["a"])
    with pytest.raises(ValueError):
        rbo(["a", "b"], ["a", "b"], p=1.0)
    with pytest.raises(ValueError):
        rbo(["a", "a"], ["a", "b"])


def test_jaccard_and_top1():
    assert top_k_jaccard(IDS, IDS, 10) == 1.0
    assert top_k_jaccard(IDS, IDS[::-1], 10) == 0.0
    assert top_k_jaccard(list("abcd"), list("abce"), 4) == pytest.approx(3 / 5)
    assert top_k_jaccard(list("abcd"), list("dcba"), 2) == 0.0
    assert top_k_jaccard([], [], 3) == 1.0
    assert top1_agreement(list("ab"), list("ac")) == 1.0
    assert top1_agreement(list("ab"), list("ba")) == 0.0
    with pytest.raises(ValueError):
        top1_agreement([], ["a"])


def test_pairwise_is_mean_of_pairs():
    base = IDS[:15]
    rankings = [base, swap(base, 3), base[::-1]]
    out = pairwise_stability(rankings, k=5, p=0.8)
    assert set(out) == {
        "kendall_tau", "rbo@5", "top1_agreement", "top5_jaccard", "spearman",
        "top5_set_agreement",
    }  # fmt: skip
    pairs = list(itertools.combinations(rankings, 2))
    expected = {
        "kendall_tau": np.mean([kendall_tau(a, b) for a, b in pairs]),
        "rbo@5": np.mean([rbo(a, b, 0.8, 5) for a, b in pairs]),
        "top1_agreement": np.mean([top1_agreement(a, b) for a, b in pairs]),
        "top5_jaccard": np.mean([top_k_jaccard(a, b, 5) for a, b in pairs]),
        "spearman": np.mean([spearman_rho(a, b) for a, b in pairs]),
        "top5_set_agreement": np.mean([top_k_set_agreement(a, b, 5) for a, b in pairs]),
    }
    assert out == pytest.approx(expected)
    assert out["top1_agreement"] == pytest.approx(1 / 3)  # only base and swap(base, 3) agree


def test_pairwise_random_matches_scalar_functions():
    rng = np.random.default_rng(3)
    for n, m, k in ((1, 3, 10), (2, 2, 10), (7, 5, 10), (40, 6, 10), (12, 4, 3)):
        base = [f"e{i}" for i in range(n)]
        rankings = [list(rng.permutation(base)) for _ in range(m)]
        pairs = list(itertools.combinations(rankings, 2))
        out = pairwise_stability(rankings, k=k)
        assert out["kendall_tau"] == pytest.approx(
            np.mean([kendall_tau(a, b) for a, b in pairs]), nan_ok=True
        )  # n = 1: NaN in both (no pair of candidates)
        assert out[f"rbo@{k}"] == pytest.approx(np.mean([rbo(a, b, 0.9, k) for a, b in pairs]))
        assert out["spearman"] == pytest.approx(
            np.mean([spearman_rho(a, b) for a, b in pairs]), nan_ok=True
        )
        if n <= k:  # every top k is the whole set: undefined, not perfect agreement
            assert np.isnan(out[f"top{k}_jaccard"]) and np.isnan(out[f"top{k}_set_agreement"])
            continue
        assert out[f"top{k}_jaccard"] == pytest.approx(
            np.mean([top_k_jaccard(a, b, k) for a, b in pairs])
        )
        assert out[f"top{k}_set_agreement"] == pytest.approx(
            np.mean([top_k_set_agreement(a, b, k) for a, b in pairs])
        )


@pytest.mark.parametrize("n", [3, 10])
def test_top_k_sets_are_undefined_when_every_candidate_is_in_the_top_k(n):
    """With n <= k every output's top k is the whole set, whatever the reranker did: the
    top-k Jaccard and set agreement would read 1 (perfectly stable) by construction, so
    they are NaN; the order-sensitive metrics stay defined. (They read 1.0 before.)"""
    rankings = [IDS[:n], IDS[:n][::-1]]
    out = pairwise_stability(rankings, k=10)
    assert np.isnan(out["top10_jaccard"]) and np.isnan(out["top10_set_agreement"])
    assert out["kendall_tau"] == -1.0 and out["top1_agreement"] == 0.0
    eleven = pairwise_stability([IDS[:11], IDS[:11][::-1]], k=10)
    assert eleven["top10_set_agreement"] == 0.0  # one candidate leaves the top 10


def test_pairwise_degenerate_and_invalid():
    out = pairwise_stability([IDS])
    assert set(out) == {
        "kendall_tau", "rbo@10", "top1_agreement", "top10_jaccard", "spearman",
        "top10_set_agreement",
    }  # fmt: skip
    assert all(np.isnan(v) for v in out.values())
    assert all(np.isnan(v) for v in pairwise_stability([]).values())
    assert pairwise_stability([IDS, IDS]) == pytest.approx(
        {
            "kendall_tau": 1,
            "rbo@10": 1,
            "top1_agreement": 1,
            "top10_jaccard": 1,
            "spearman": 1,
            "top10_set_agreement": 1,
        }
    )
    with pytest.raises(ValueError):
        pairwise_stability([IDS, [*IDS[:-1], "other"]])


def test_pairwise_stability_is_exact_across_pair_chunks():
    # 100 rankings of 100 ids make 4,950 pairs: more than one chunk of 4,000 pairs.
    rng = np.random.default_rng(5)
    ids = [f"d{i}" for i in range(100)]
    rankings = [[ids[c] for c in rng.permutation(100)] for _ in range(100)]
    pairs = [(a, b) for x, a in enumerate(rankings) for b in rankings[x + 1 :]]
    got = pairwise_stability(rankings)
    assert got["rbo@10"] == pytest.approx(np.mean([rbo(a, b) for a, b in pairs]), abs=1e-12)
    jaccards = [top_k_jaccard(a, b) for a, b in pairs]
    assert got["top10_jaccard"] == pytest.approx(np.mean(jaccards), abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5, 40])
def test_shown_order_taus_equal_kendall_tau_bit_for_bit(n):
    """The vectorised copy tau is SciPy's tau-b to the last bit, row by row."""
    rng = np.random.default_rng(n)
    shown = np.stack([rng.permutation(n) for _ in range(12)])
    output = np.stack([rng.permutation(n) for _ in range(12)])
    output[0], output[1] = shown[0], shown[1][::-1]  # copies (+1) and reverses (-1)
    ids = [f"d{i}" for i in range(n)]
    expected = [
        kendall_tau([ids[i] for i in s], [ids[i] for i in o])
        for s, o in zip(shown, output, strict=True)
    ]
    got = shown_order_taus(shown, output)
    assert np.array(expected).tobytes() == got.tobytes()
    if n > 1:
        assert got[0] == pytest.approx(1.0) and got[1] == pytest.approx(-1.0)


def test_pairwise_counts_are_exact_integers(monkeypatch):
    """Kendall tau from exact concordance counts and RBO / Jaccard from exact overlaps, bit
    for bit as a per-pair count gives them, and the same in chunks of a few pairs."""
    from harness.metrics import stability

    rng = np.random.default_rng(11)
    ids = [f"d{i}" for i in range(23)]
    rankings = [[ids[c] for c in rng.permutation(23)] for _ in range(9)]
    pairs = list(itertools.combinations(rankings, 2))
    taus, overlaps = [], []
    for a, b in pairs:
        where = {doc: r for r, doc in enumerate(b)}
        signs = [
            1 if where[a[x]] < where[a[y]] else -1 for x in range(23) for y in range(x + 1, 23)
        ]
        taus.append(sum(signs) / len(signs))
        overlaps.append([len(set(a[:d]) & set(b[:d])) for d in range(1, 11)])
    overlap = np.array(overlaps)
    got = pairwise_stability(rankings)
    assert got["kendall_tau"] == np.mean(taus)
    assert got["rbo@10"] == np.mean(stability._rbo_ext(overlap, 0.9))
    assert got["top10_jaccard"] == np.mean(overlap[:, -1] / (20 - overlap[:, -1]))
    monkeypatch.setattr(stability, "_PAIR_CHUNK_ELEMENTS", 40)  # a few pairs per chunk
    assert pairwise_stability(rankings) == got
