"""Effectiveness kernels against an independent numpy oracle (and pytrec_eval when installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.metrics.effectiveness import ENGINES, check_metric, compile_kernels, effectiveness


def oracle_ndcg(grades: dict[str, int], ranking: list[str], k: int) -> float:
    """trec_eval nDCG@k: grade as gain, 1/log2(rank + 1), ideal from all judged docs."""
    gain = np.array([max(grades.get(d, 0), 0) for d in ranking[:k]], dtype=float)
    dcg = (gain / np.log2(np.arange(2, gain.size + 2))).sum()
    ideal = np.sort([g for g in grades.values() if g > 0])[::-1][:k].astype(float)
    return dcg / (ideal / np.log2(np.arange(2, ideal.size + 2))).sum()


def oracle_mrr(grades: dict[str, int], ranking: list[str], k: int) -> float:
    hit = [r for r, d in enumerate(ranking[:k], 1) if grades.get(d, 0) > 0]
    return 1 / hit[0] if hit else 0.0


QRELS = {"q1": {"a": 2, "b": 1, "z": 3}, "q2": {"x": 1}}


def test_hand_cases():
    rankings = [("q1", ["c", "b", "a"]), ("q2", ["x", "y"]), ("q2", ["y", "x"]), ("q1", ["d"])]
    out = effectiveness(QRELS, rankings)
    # q1: DCG = 1/log2(3) + 2/log2(4) = 1.6309; IDCG (z, a, b unretrieved z included)
    # = 3 + 2/log2(3) + 1/2 = 4.7619 -> 0.34249
    ideal = 3 + 2 / math.log2(3) + 1 / 2
    expected_ndcg = [(1 / math.log2(3) + 1) / ideal, 1.0, 1 / math.log2(3), 0.0]
    np.testing.assert_allclose(out["ndcg@10"], expected_ndcg)
    np.testing.assert_allclose(out["mrr@10"], [0.5, 1.0, 0.5, 0.0])


def test_cutoff_and_other_metrics():
    ranking = [f"n{i}" for i in range(10)] + ["x"]
    out = effectiveness(QRELS, [("q2", ranking)], ["ndcg@10", "mrr@10", "mrr", "recall@10", "map"])
    assert out["ndcg@10"][0] == 0 and out["mrr@10"][0] == 0 and out["recall@10"][0] == 0
    assert out["mrr"][0] == pytest.approx(1 / 11) and out["map"][0] == pytest.approx(1 / 11)


def test_relevance_threshold_option():
    """Textbook case: q1 ranks b (grade 1) then a (grade 2). At trec_eval's default level
    (grade >= 1) the first relevant document is at rank 1; at MS MARCO's (grade >= 2, ranx's
    and trec_eval's ``-l2``) it is at rank 2, and recall counts z and a only."""
    metrics = ["mrr@10", "mrr@10-l2", "recall@10-l2", "precision@2-l2", "map-l3"]
    out = effectiveness(QRELS, [("q1", ["b", "a", "c"])], metrics)
    assert out["mrr@10"][0] == 1.0 and out["mrr@10-l2"][0] == 0.5
    assert out["recall@10-l2"][0] == pytest.approx(0.5) and out["precision@2-l2"][0] == 0.5
    assert out["map-l3"][0] == 0.0  # z (grade 3) is not retrieved
    for bad in ("ndcg@10-l2", "mrr@10-l0", "mrr-l", "mrr@10-L2"):
        with pytest.raises(ValueError, match="unknown metric"):
            check_metric(bad)


def random_case(rng: np.random.Generator, n_queries: int = 30, n_entries: int = 300):
    qrels: dict[str, dict[str, int]] = {}
    for q in range(n_queries):
        docs = rng.choice(40, size=rng.integers(1, 25), replace=False)
        gains = rng.integers(0, 4, docs.size)
        grades = {f"d{d}": int(g) for d, g in zip(docs, gains, strict=True)}
        grades[f"d{docs[0]}"] = int(rng.integers(1, 4))  # at least one relevant
        qrels[f"q{q}"] = grades
    rankings = [
        (
            f"q{rng.integers(n_queries)}",
            [f"d{d}" for d in rng.permutation(40)[: rng.integers(0, 30)]],
        )
        for _ in range(n_entries)
    ]
    return qrels, rankings


def test_random_batch_matches_oracle():
    qrels, rankings = random_case(np.random.default_rng(0))
    out = effectiveness(qrels, rankings, ["ndcg@10", "mrr@10", "ndcg@5"])
    for name, oracle, k in [("ndcg@10", oracle_ndcg, 10), ("mrr@10", oracle_mrr, 10),
                            ("ndcg@5", oracle_ndcg, 5)]:  # fmt: skip
        expected = [oracle(qrels[q], r, k) for q, r in rankings]
        np.testing.assert_allclose(out[name], expected, atol=1e-12)
    assert out["ndcg@10"].std() > 0.1  # the batch is not degenerate


@settings(max_examples=30, deadline=None)
@given(
    grades=st.lists(st.integers(0, 3), min_size=1, max_size=12).filter(lambda g: max(g) > 0),
    perm=st.permutations(range(15)),
    depth=st.integers(0, 15),
)
def test_property_matches_oracle(grades, perm, depth):
    qrels = {"q": {f"d{i}": g for i, g in enumerate(grades)}}
    ranking = [f"d{i}" for i in perm[:depth]]
    out = effectiveness(qrels, [("q", ranking)] * 2)
    assert out["ndcg@10"] == pytest.approx([oracle_ndcg(qrels["q"], ranking, 10)] * 2)
    assert out["mrr@10"] == pytest.approx([oracle_mrr(qrels["q"], ranking, 10)] * 2)


def test_alignment_survives_key_sorting():
    # 12 entries: ranx sorts keys, and "q\x1f10" < "q\x1f2" lexicographically.
    rankings = [("q2", [f"n{j}" for j in range(i)] + ["x"]) for i in range(12)]
    for metric in ("mrr", "mrr@20"):  # one metric alone, with and without a cutoff
        out = effectiveness(QRELS, rankings, [metric])
        np.testing.assert_allclose(out[metric], [1 / (i + 1) for i in range(12)])


def test_the_ranking_decides_not_the_doc_ids():
    """ranx reads a ranking from its scores: each entry's order alone must decide, whatever
    codes its doc ids get (here c is coded before a and b in one call, last in the other)."""
    ranking = ["a", "b", "c"]
    qrels = {"q": {"c": 1}}
    np.testing.assert_allclose(effectiveness(qrels, [("q", ranking)])["mrr@10"], [1 / 3])
    np.testing.assert_allclose(effectiveness(qrels, [("q", ranking[::-1])])["mrr@10"], [1.0])
    both = effectiveness(qrels, [("q", ranking[::-1]), ("q", ranking)])["mrr@10"]
    np.testing.assert_allclose(both, [1.0, 1 / 3])


def test_unjudged_and_invalid_inputs():
    with pytest.raises(ValueError, match="'q9'"):
        effectiveness(QRELS, [("q9", ["a"])])
    with pytest.raises(ValueError, match="'q0'"):
        effectiveness({"q0": {"a": 0, "b": 0}}, [("q0", ["a", "b"])])
    with pytest.raises(ValueError, match="duplicate"):
        effectiveness(QRELS, [("q1", ["a", "a"])])
    with pytest.raises(ValueError, match="unknown metric"):
        effectiveness(QRELS, [("q1", ["a"])], ["ndcg_burges@10"])
    for bad in ("ndcg@0", "NDCG@10", "ndcg@", "map@x"):
        with pytest.raises(ValueError):
            check_metric(bad)
    assert effectiveness(QRELS, [])["ndcg@10"].shape == (0,)


def test_matches_pytrec_eval():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels, rankings = random_case(np.random.default_rng(1), n_entries=100)
    out = effectiveness(qrels, rankings, ["ndcg@10", "mrr@10"])
    for i, (q, ranking) in enumerate(rankings):
        evaluator = pytrec_eval.RelevanceEvaluator({q: qrels[q]}, {"ndcg_cut.10", "recip_rank"})
        top = {d: float(len(ranking) - r) for r, d in enumerate(ranking[:10])}
        res = evaluator.evaluate({q: top}).get(q, {"ndcg_cut_10": 0.0, "recip_rank": 0.0})
        assert out["ndcg@10"][i] == pytest.approx(res["ndcg_cut_10"], abs=1e-9)
        assert out["mrr@10"][i] == pytest.approx(res["recip_rank"], abs=1e-9)


def test_ranx_gets_float_arrays_whatever_the_dataset(monkeypatch: pytest.MonkeyPatch):
    """ranx compiles a kernel per input type (its string path: per longest-doc-id length, and
    typed containers compiled in every process): it gets float64 arrays of one layout, from
    any ids, so kernels compiled once (at set-up) serve every dataset; numbers do not change."""
    import ranx

    seen: set[tuple] = set()
    real = ranx.evaluate

    def evaluate(qrels, run, *args, **kwargs):
        seen.update((type(a), a.dtype, a.ndim, a.flags.c_contiguous) for a in (qrels, run))
        return real(qrels, run, *args, **kwargs)

    monkeypatch.setattr(ranx, "evaluate", evaluate)
    short = effectiveness({"q": {"a": 2, "b": 1}}, [("q", ["b", "a", "c"])], engine="ranx")
    long_ids = {"a": "MSMARCO-passage-0000001", "b": "b" * 40, "c": "doc-c"}
    renamed = effectiveness(
        {"q": {long_ids["a"]: 2, long_ids["b"]: 1}},
        [("q", [long_ids[d] for d in "bac"])],
        engine="ranx",
    )
    assert seen == {(np.ndarray, np.dtype(np.float64), 3, True)}
    for metric, values in short.items():
        np.testing.assert_array_equal(values, renamed[metric])
    assert short["mrr@10"][0] == 1.0 and 0 < short["ndcg@10"][0] < 1


def test_no_dataset_compiles_a_kernel_after_set_up():
    """After ``compile_kernels`` (what set-up runs), other ids, list lengths, judgment counts
    and batch sizes add no specialisation to ranx's kernels: nothing compiles in a run."""
    from ranx.metrics.ndcg import _ndcg_parallel
    from ranx.metrics.reciprocal_rank import _reciprocal_rank_parallel

    compile_kernels()
    kernels = (_ndcg_parallel, _reciprocal_rank_parallel)
    before = [list(k.signatures) for k in kernels]
    qrels, rankings = random_case(np.random.default_rng(2), n_entries=50)
    qrels["long"] = {"MSMARCO-passage-" + "9" * 30: 3, "x": 1}
    effectiveness(qrels, [*rankings, ("long", ["x", "y" * 50])], engine="ranx")
    assert [list(k.signatures) for k in kernels] == before
    assert all(before)


def test_judgment_padding_changes_no_number():
    """Queries with 1 and 30 relevant judgments in one call: the shorter one's padded rows
    count nowhere (recall's denominator, the ideal DCG, MAP)."""
    many = {f"d{i}": 1 + i % 3 for i in range(30)}
    qrels = {"few": {"d0": 2, "n": 0}, "many": many}
    ranking = [f"d{i}" for i in range(12)]
    metrics = ["ndcg@10", "recall@10", "map", "precision@5"]
    for engine in ENGINES:
        together = effectiveness(
            qrels, [("few", ranking), ("many", ranking)], metrics, engine=engine
        )
        alone = [
            effectiveness(qrels, [(q, ranking)], metrics, engine=engine) for q in ("few", "many")
        ]
        for metric in metrics:
            np.testing.assert_allclose(together[metric], [a[metric][0] for a in alone])
        assert together["recall@10"][0] == 1.0 and together["ndcg@10"][0] == 1.0


# nDCG and MRR in every form the NumPy engine computes itself
KERNEL_METRICS = ["ndcg@10", "mrr@10", "ndcg@5", "ndcg", "mrr", "mrr@3-l2", "mrr-l3", "ndcg@20"]


def assert_engines_equal(qrels, rankings, metrics, relevance_level=1):
    """The NumPy engine's floats are ranx's (the reference), bit for bit."""
    ours = effectiveness(qrels, rankings, metrics, relevance_level=relevance_level)
    ranx = effectiveness(qrels, rankings, metrics, relevance_level=relevance_level, engine="ranx")
    assert ours.keys() == ranx.keys()
    for metric in metrics:
        np.testing.assert_array_equal(ours[metric], ranx[metric], err_msg=metric)


@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("level", [1, 2])
def test_numpy_engine_is_ranx_bit_for_bit_on_random_data(seed, level):
    qrels, rankings = random_case(np.random.default_rng(seed), n_entries=400)
    rankings.append(("q0", []))  # an empty ranking scores 0
    assert_engines_equal(qrels, rankings, [*KERNEL_METRICS, "recall@10"], level)


def test_numpy_engine_is_ranx_bit_for_bit_on_dl19(dl19_dir):
    """DL19's qrels (grades 0-3, up to hundreds judged per query) and its BM25 top 100, as
    loaded and in seeded shuffles: the rankings a run scores."""
    from harness.data.trec import read_qrels, read_run

    qrels = read_qrels(dl19_dir / "qrels.txt")
    run = read_run(dl19_dir / "bm25_top100.trec")
    rng = np.random.default_rng(0)
    rankings = []
    for qid in run:
        docs = [doc for doc, _ in run[qid]]
        if qid in qrels and max(qrels[qid].values()) > 0:
            rankings += [(qid, list(docs))] + [(qid, list(rng.permutation(docs))) for _ in range(5)]
    assert len({q for q, _ in rankings}) == 43
    for level in (1, 2):
        assert_engines_equal(qrels, rankings, KERNEL_METRICS, level)


def test_engine_is_checked():
    with pytest.raises(ValueError, match="unknown engine"):
        effectiveness(QRELS, [("q1", ["a"])], engine="numba")
