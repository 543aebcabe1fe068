"""The reranker interface, the registry and the two controls."""

from __future__ import annotations

import numpy as np
import pytest

from harness.data.model import Candidate, CandidateSet, TextQuery
from harness.errors import HarnessError
from harness.rerankers.base import Reranker, RerankOutput, RunContext, ranking_from_scores
from harness.rerankers.methods.controls import FirstStageReranker, IdentityReranker
from harness.rerankers.registry import build_reranker, load_preset, resolve_preset

CONTEXT = RunContext()


def _set(scores: list[float]) -> CandidateSet:
    candidates = tuple(
        Candidate(doc_id=f"d{i}", text=f"text {i}", first_stage_score=s)
        for i, s in enumerate(scores)
    )
    return CandidateSet("q", TextQuery("query"), candidates)


def test_identity_returns_the_shown_order():
    cset = _set([3.0, 2.0, 1.0])
    outputs = IdentityReranker("identity", CONTEXT).rerank(cset, np.array([[2, 0, 1], [0, 1, 2]]))
    assert [o.ranking for o in outputs] == [("d2", "d0", "d1"), ("d0", "d1", "d2")]
    assert outputs[0].facts.batch_size == 2


def test_first_stage_ignores_the_shown_order_and_keeps_list_order_for_ties():
    # d1 and d3 tie; the loaded list puts d3 after d1, whatever order they are shown in.
    cset = _set([5.0, 2.0, 9.0, 2.0])
    orders = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]])
    outputs = FirstStageReranker("first-stage", CONTEXT).rerank(cset, orders)
    assert {o.ranking for o in outputs} == {("d2", "d0", "d1", "d3")}


def test_ranking_from_scores_breaks_ties_by_id_not_position():
    assert ranking_from_scores(["b", "a", "c"], [1.0, 1.0, 2.0]) == ("c", "a", "b")
    with pytest.raises(ValueError, match="NaN"):
        ranking_from_scores(["a"], [float("nan")])


def test_base_class_rejects_an_output_that_is_not_a_permutation():
    class Broken(Reranker):
        def _rerank_batch(self, candidate_set, orders):
            return [RerankOutput(ranking=("d0", "d0"), facts=None) for _ in orders]

    with pytest.raises(HarnessError, match="not a permutation"):
        Broken("broken", CONTEXT).rerank(_set([1.0, 2.0]), np.array([[0, 1]]))


def test_registry_resolves_bundled_presets_and_user_files(tmp_path):
    preset = resolve_preset("first-stage")
    assert preset.order_invariant
    assert isinstance(build_reranker(preset, CONTEXT), FirstStageReranker)
    custom = tmp_path / "mine.yaml"
    custom.write_text("name: mine\nadapter: identity\nparams: {}\n")
    assert resolve_preset(str(custom)).name == "mine"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("name: x\n", "needs a string 'adapter'"),
        ("name: x\nadapter: identity\ncolour: red\n", "unknown preset keys"),
        ("name: x\nadapter: identity\nparams: [1]\n", "'params' must be a mapping"),
        ("name: x\nadapter: [unclosed\n", r"mine\.yaml:\d+: expected"),
    ],
)
def test_malformed_presets_are_clear_errors(tmp_path, text, fragment):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(HarnessError, match=fragment):
        load_preset(path)


def test_unknown_adapter_and_bad_params_are_clear_errors(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: x\nadapter: nonsense\n")
    with pytest.raises(HarnessError, match="unknown adapter 'nonsense'"):
        build_reranker(load_preset(path), CONTEXT)
    path.write_text("name: x\nadapter: identity\nparams: {temperature: 1}\n")
    with pytest.raises(HarnessError, match="unknown param 'temperature'; known params: none"):
        build_reranker(load_preset(path), CONTEXT)
