"""Meta-rerankers (debiasers that wrap a reranker preset): the direction check on a
position-biased fake whose outcome is known in closed form, cost and provenance, seeding from
content, and one-line errors for bad presets."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from harness.config import RunConfig
from harness.data.model import Candidate, CandidateSet, TextQuery
from harness.errors import HarnessError
from harness.rerankers.base import CallFacts, Reranker, RerankOutput, RunContext
from harness.rerankers.debiasers.meta import Bootstrapping, PermutationSelfConsistency
from harness.rerankers.registry import build_reranker, check_preset, load_preset
from harness.runner import execute_run, prepare_run
from tests.conftest import write_rankgpt_folder

CONTEXT = RunContext(batch_size=4)


class PrimacyReranker(Reranker):
    """Deliberately position-biased: the candidate shown first goes to the top, the others
    follow in first-stage order (the truth here). One 'forward pass' and 10 tokens per order."""

    def _rerank_batch(self, candidate_set: CandidateSet, orders: np.ndarray) -> list[RerankOutput]:
        ids = candidate_set.doc_ids
        out = []
        for row in orders:
            first = int(row[0])
            rest = [i for i in range(len(ids)) if i != first]
            facts = CallFacts(
                latency_ms=1.0, call_latency_ms=1.0, forward_passes=1, prompt_tokens=10
            )
            out.append(RerankOutput(tuple(ids[i] for i in [first, *rest]), facts))
        return out


FAKE = "tests.test_meta_rerankers:PrimacyReranker"


def _preset(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\n{text}", encoding="utf-8")
    return path


def _fake_presets(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return _preset(folder, "primacy", f"adapter: '{FAKE}'\nparams: {{}}\n")


# --- the closed form --------------------------------------------------------------------------
#
# Under PrimacyReranker, an inner order whose first item is f ranks item r (first-stage index)
# at 0 if f = r, at r if f < r, at r + 1 if f > r. Borda over m inner orders therefore gives
# item r  m (n - 2 - r) + #{j: f_j < r} + (r + 1) #{j: f_j = r}  points, ties to the smaller
# index: the output is a function of the first-shown items f_1..f_m alone.


def borda_of_first_items(first_items: list[int], n: int) -> tuple[int, ...]:
    m = len(first_items)
    counts = Counter(first_items)
    points = [
        m * (n - 2 - r) + sum(counts[f] for f in range(r)) + (r + 1) * counts[r] for r in range(n)
    ]
    return tuple(sorted(range(n), key=lambda r: (-points[r], r)))


def kendall_tau(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    n = len(a)
    pa = {item: i for i, item in enumerate(a)}
    pb = {item: i for i, item in enumerate(b)}
    s = sum(
        np.sign(pa[i] - pa[j]) * np.sign(pb[i] - pb[j])
        for i, j in itertools.combinations(range(n), 2)
    )
    return float(s) / (n * (n - 1) / 2)


def expected_tau_iid(n: int, m: int) -> float:
    """E[tau] between two outputs whose m first-shown items are i.i.d. uniform (the
    population value over seeds), exactly, by enumerating the multinomial counts."""
    law: Counter[tuple[int, ...]] = Counter()
    for counts in _compositions(m, n):
        probability = math.factorial(m) / math.prod(math.factorial(c) for c in counts) / n**m
        items = [r for r, c in enumerate(counts) for _ in range(c)]
        law[borda_of_first_items(items, n)] += probability
    return sum(pa * pb * kendall_tau(a, b) for a, pa in law.items() for b, pb in law.items())


def _compositions(total: int, parts: int):
    if parts == 1:
        yield (total,)
        return
    for head in range(total + 1):
        for tail in _compositions(total - head, parts - 1):
            yield (head, *tail)


def exhaustive_tau(cset: CandidateSet, reranker: PermutationSelfConsistency) -> float:
    """The mean pairwise tau the harness measures under --strategy exhaustive, in closed form:
    every shown order s, first-shown items s[pi_j[0]] for the meta-reranker's seeded pi_j."""
    n = len(cset)
    firsts = [int(p[0]) for p in reranker.position_permutations(cset)]
    outputs = [
        borda_of_first_items([s[k] for k in firsts], n) for s in itertools.permutations(range(n))
    ]
    pairs = list(itertools.combinations(outputs, 2))
    return sum(kendall_tau(a, b) for a, b in pairs) / len(pairs)


def test_population_tau_rises_with_m_towards_one():
    taus = [expected_tau_iid(5, m) for m in (1, 3, 5, 10)]
    assert taus == sorted(taus) and len(set(taus)) == 4, taus
    assert taus[0] < 0.8 < taus[-1]


@pytest.fixture(scope="module")
def exhaustive_runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("meta")
    data = write_rankgpt_folder(root / "data", queries=3, candidates=5)
    presets = root / "presets"
    _fake_presets(presets)
    runs = {}
    for m in (1, 3, 5, 10):
        path = _preset(
            presets,
            f"psc{m}",
            f"adapter: psc\nparams: {{inner: primacy.yaml, shuffles: {m}, aggregation: borda}}\n",
        )
        config = RunConfig(
            reranker=str(path), dataset=str(data), strategy="exhaustive", out=str(root / f"m{m}")
        ).validate()
        prepared = prepare_run(config)
        results = execute_run(prepared)
        reranker = build_reranker(load_preset(path), CONTEXT)
        runs[m] = (prepared, results, reranker)
    plain = RunConfig(
        reranker=str(presets / "primacy.yaml"),
        dataset=str(data),
        strategy="exhaustive",
        out=str(root / "plain"),
    ).validate()
    runs["plain"] = execute_run(prepare_run(plain))
    return runs


def test_measured_tau_matches_the_closed_form_and_rises_with_m(exhaustive_runs):
    means = []
    for m in (1, 3, 5, 10):
        prepared, results, reranker = exhaustive_runs[m]
        for cset in prepared.dataset.sets:
            measured = results.per_query[cset.query_id]["kendall_tau"]
            assert measured == pytest.approx(exhaustive_tau(cset, reranker), abs=1e-12)
        means.append(results.summary_value("kendall_tau"))
    plain = exhaustive_runs["plain"].summary_value("kendall_tau")
    assert means[0] == pytest.approx(plain)  # one shuffle: as order-sensitive as the inner
    assert means == sorted(means) and means[-1] > means[0] + 0.2, means


def test_cost_is_the_sum_of_the_inner_calls_and_provenance_names_the_inner(exhaustive_runs):
    for m in (1, 3, 5, 10):
        _, results, _ = exhaustive_runs[m]
        identity = results.reranker.identity
        assert identity["method"] == "psc"
        assert identity["inner"]["preset"]["adapter"] == FAKE
        assert identity["inner"]["identity"]["adapter"] == "PrimacyReranker"
    prepared, _, _ = exhaustive_runs[10]
    from harness.results.store import iter_samples

    for sample in iter_samples(prepared.run_dir):
        assert sample.facts["forward_passes"] == 10
        assert sample.facts["prompt_tokens"] == 100
        assert sample.facts["latency_ms"] == pytest.approx(10.0)
        assert sample.facts["extra"]["inner_orders"] == 10


def _cset(n: int = 6, query_id: str = "q") -> CandidateSet:
    candidates = tuple(Candidate(f"d{i}", f"text {i}", float(-i)) for i in range(n))
    return CandidateSet(query_id, TextQuery("query"), candidates)


def test_internal_orders_come_from_content_not_from_the_batch(tmp_path):
    _fake_presets(tmp_path)
    path = _preset(tmp_path, "psc", "adapter: psc\nparams: {inner: primacy.yaml, shuffles: 4}\n")
    reranker = build_reranker(load_preset(path), CONTEXT)
    cset = _cset()
    orders = np.array([np.roll(np.arange(6), s) for s in range(6)])
    together = reranker.rerank(cset, orders)
    alone = [reranker.rerank(cset, orders[i : i + 1])[0] for i in range(6)]
    assert [o.ranking for o in together] == [o.ranking for o in alone]
    same = reranker.position_permutations(cset)
    assert np.array_equal(same, reranker.position_permutations(cset))
    other = reranker.position_permutations(_cset(query_id="other"))
    assert not np.array_equal(same, other)


def test_bootstrap_replicas_are_the_shown_order_and_distinct_shuffles(tmp_path):
    _fake_presets(tmp_path)
    path = _preset(
        tmp_path, "boot", "adapter: bootstrap\nparams: {inner: primacy.yaml, replicas: 6}\n"
    )
    reranker = build_reranker(load_preset(path), CONTEXT)
    assert isinstance(reranker, Bootstrapping)
    permutations = reranker.position_permutations(_cset(8))
    assert np.array_equal(permutations[0], np.arange(8))
    assert len({tuple(p) for p in permutations}) == 6  # not one order repeated (LLMRank's bug)
    one = build_reranker(
        load_preset(
            _preset(
                tmp_path, "b1", "adapter: bootstrap\nparams: {inner: primacy.yaml, replicas: 1}\n"
            )
        ),
        CONTEXT,
    )
    shown = np.array([[3, 1, 0, 2, 5, 4, 7, 6]])
    assert one.rerank(_cset(8), shown)[0].ranking[0] == "d3"  # B = 1 is the inner reranker


@pytest.mark.parametrize("aggregation", ["kemeny", "borda", "rrf"])
def test_every_aggregation_returns_a_ranking(tmp_path, aggregation):
    _fake_presets(tmp_path)
    text = (
        f"adapter: psc\nparams: {{inner: primacy.yaml, shuffles: 7, aggregation: {aggregation}}}\n"
    )
    reranker = build_reranker(load_preset(_preset(tmp_path, "p", text)), CONTEXT)
    output = reranker.rerank(_cset(), np.array([[5, 4, 3, 2, 1, 0]]))[0]
    assert sorted(output.ranking) == sorted(_cset().doc_ids)
    assert output.facts.extra["aggregation"] == aggregation


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("adapter: psc\nparams: {inner: nope}\n", "inner reranker: unknown reranker 'nope'"),
        (
            "adapter: psc\nparams: {inner: primacy.yaml, aggregation: mean}\n",
            "unknown aggregation 'mean'; use one of kemeny, borda, rrf",
        ),
        ("adapter: psc\nparams: {inner: primacy.yaml, shuffles: 0}\n", "'shuffles' must be"),
        ("adapter: psc\nparams: {shuffles: 3}\n", "needs param 'inner'"),
        ("adapter: psc\nparams: {inner: primacy.yaml, m: 3}\n", "unknown param 'm'"),
        ("adapter: psc\nbackend: vllm\nparams: {inner: primacy.yaml}\n", "takes no backend"),
    ],
)
def test_bad_meta_presets_fail_in_one_line(tmp_path, text, message):
    _fake_presets(tmp_path)
    with pytest.raises(HarnessError) as info:
        check_preset(load_preset(_preset(tmp_path, "bad", text)))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_cycle_of_meta_rerankers_is_refused(tmp_path):
    _preset(tmp_path, "a", "adapter: psc\nparams: {inner: b.yaml}\n")
    _preset(tmp_path, "b", "adapter: bootstrap\nparams: {inner: a.yaml}\n")
    with pytest.raises(HarnessError, match=r"cycle \(a -> b -> a\)"):
        check_preset(load_preset(tmp_path / "a.yaml"))
    _preset(tmp_path, "self", "adapter: psc\nparams: {inner: self.yaml}\n")
    with pytest.raises(HarnessError, match=r"cycle \(self -> self\)"):
        check_preset(load_preset(tmp_path / "self.yaml"))


def test_meta_over_meta_is_allowed_and_costs_multiply(tmp_path):
    _fake_presets(tmp_path)
    _preset(tmp_path, "inner", "adapter: psc\nparams: {inner: primacy.yaml, shuffles: 3}\n")
    outer = _preset(tmp_path, "outer", "adapter: bootstrap\nparams: {inner: inner.yaml}\n")
    reranker = build_reranker(load_preset(outer), CONTEXT)
    output = reranker.rerank(_cset(), np.array([np.arange(6)]))[0]
    assert output.facts.forward_passes == 9


def test_bundled_meta_presets_check_without_loading_a_model():
    from harness.rerankers.registry import resolve_preset

    for name in ("psc-lft", "bootstrap-lft", "psc-first", "bootstrap-first"):
        check_preset(resolve_preset(name))
