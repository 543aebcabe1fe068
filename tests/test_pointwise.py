"""Pointwise yes/no reranker: KV-cached prefix equals full-sequence scoring, batching and
order do not change scores, and the call facts say what was computed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("torch", reason="the llm extra (torch) is not installed")
pytest.importorskip("transformers", reason="the llm extra (transformers) is not installed")

import torch

from harness.backends.transformers_backend import TransformersBackend
from harness.data.model import (
    Candidate,
    CandidateSet,
    HistoryItem,
    TextQuery,
    UserProfile,
)
from harness.errors import HarnessError
from harness.models.loading import LoadedModel, build_tiny_llama
from harness.permutations import OrderLabel
from harness.rerankers.base import RunContext
from harness.rerankers.methods.pointwise import PointwiseReranker, SetPrompts
from harness.rerankers.params import PointwiseParams
from harness.results.store import Sample
from harness.results.summary import CostCounter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOLERANCE = 1e-4


def movie_set() -> CandidateSet:
    past = (HistoryItem("h0", "Star Wars", 5.0, {"year": 1977}), HistoryItem("h1", "Alien", 4.0))
    titles = ("Heat (1995)", "Babe (1995) — Comedy, Drama", "Fargo (1996)", "Toy Story")
    candidates = tuple(Candidate(f"m{i}", t, 0.0) for i, t in enumerate(titles))
    return CandidateSet("u1", UserProfile("u1", past), candidates)


def passage_set() -> CandidateSet:
    texts = ("Paris is the capital of France.", "Bread needs yeast.", "Lyon is in France.")
    candidates = tuple(Candidate(f"d{i}", t, 0.0) for i, t in enumerate(texts))
    return CandidateSet("q1", TextQuery("capital of france"), candidates)


def full_sequence_scores(
    loaded: LoadedModel, prompts: SetPrompts, answers: tuple[int, int]
) -> np.ndarray:
    """Reference: each candidate's whole prompt in its own plain forward pass, no cache."""
    scores = []
    with torch.inference_mode():
        for suffix in prompts.suffixes:
            ids = torch.tensor([[*prompts.prefix, *suffix]])
            logprobs = loaded.model(input_ids=ids).logits[0, -1].float().log_softmax(dim=-1)
            scores.append(float(logprobs[answers[0]] - logprobs[answers[1]]))
    return np.array(scores)


def pointwise(loaded: LoadedModel, **params: int) -> PointwiseReranker:
    backend = TransformersBackend(loaded)
    return PointwiseReranker("pointwise", RunContext(), backend, PointwiseParams(**params))


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return build_tiny_llama(seed=1, initializer_range=0.1)


def check_cached_batches_match_full_sequences(
    loaded: LoadedModel, candidate_set: CandidateSet
) -> None:
    for per_forward in (1, 3):  # one suffix per pass, and padded batches of three
        reranker = pointwise(loaded, candidates_per_forward=per_forward)
        prompts = reranker.encode_set(candidate_set)
        answers = reranker._answer_ids(candidate_set)
        scored = reranker.score_set(prompts, answers)
        reference = full_sequence_scores(loaded, prompts, answers)
        assert np.abs(scored.scores - reference).max() < TOLERANCE, per_forward
        assert scored.forward_passes == 1 + -(-len(candidate_set) // per_forward)


@pytest.mark.parametrize("candidate_set", [movie_set(), passage_set()], ids=["rec", "text"])
def test_tiny_cached_batches_match_full_sequences(
    tiny: LoadedModel, candidate_set: CandidateSet
) -> None:
    check_cached_batches_match_full_sequences(tiny, candidate_set)


def test_orders_share_one_scoring_and_facts_say_so(tiny: LoadedModel) -> None:
    reranker = pointwise(tiny)
    candidate_set = movie_set()
    rng = np.random.default_rng(0)
    orders = np.stack([rng.permutation(len(candidate_set)) for _ in range(5)])
    first = reranker.rerank(candidate_set, orders[:3])
    again = reranker.rerank(candidate_set, orders[3:])
    outputs = first + again
    assert len({o.ranking for o in outputs}) == 1
    assert all(o.scores == outputs[0].scores for o in outputs)
    facts = first[0].facts
    assert facts.forward_passes == 2 and facts.batch_size == 3
    assert facts.prompt_tokens > 0 and facts.extra["scores_reused"] is False
    assert again[0].facts.forward_passes == 0 and again[0].facts.extra["scores_reused"] is True
    # the set's cost is counted once, so sums over orders do not depend on the batch size
    assert sum(o.facts.forward_passes for o in outputs) == 2
    assert sum(o.facts.prompt_tokens for o in outputs) == facts.prompt_tokens
    # ... and the run's cost counter sums them as they are (not once more per batch)
    counter = CostCounter()
    counter.add([Sample("q", i, OrderLabel("random", i), tuple(orders[i]), o.ranking,
                        o.scores, o.facts.to_dict()) for i, o in enumerate(outputs)])  # fmt: skip
    assert counter.counts()["prompt_tokens"] == facts.prompt_tokens
    assert reranker.order_invariant
    assert reranker.identity()["method"] == "pointwise"
    assert reranker.identity()["backend"] == "transformers"


def test_a_different_set_is_scored_afresh(tiny: LoadedModel) -> None:
    reranker = pointwise(tiny)
    reranker.rerank(movie_set(), np.array([[0, 1, 2, 3]]))
    (output,) = reranker.rerank(passage_set(), np.array([[2, 0, 1]]))
    assert output.facts.extra["scores_reused"] is False and output.facts.forward_passes == 2


def test_overlong_prompt_names_query_and_candidate() -> None:
    small = build_tiny_llama(max_position_embeddings=64)
    reranker = pointwise(small)
    with pytest.raises(HarnessError, match=r"query 'u1': the prompt for candidate 'm1'"):
        reranker.rerank(movie_set(), np.array([[0, 1, 2, 3]]))


@pytest.mark.slow
def test_smollm2_cached_batches_match_full_sequences(smollm2: LoadedModel) -> None:
    check_cached_batches_match_full_sequences(smollm2, passage_set())


class TopKWithoutAnswers(TransformersBackend):
    """The tiny model behind a backend that, like vLLM's top-k fallback, could not return
    the answers' log-probs (``-inf``, counted as missing)."""

    def next_token_logprobs(self, batch, token_ids):
        read = super().next_token_logprobs(batch, token_ids)
        missing = np.full_like(read.logprobs, -np.inf)
        return replace(read, logprobs=missing, missing=(len(token_ids),) * len(batch.rows))


def test_missing_answer_logprobs_are_an_error_not_a_nan_ranking(tiny: LoadedModel) -> None:
    reranker = PointwiseReranker("pointwise", RunContext(), TopKWithoutAnswers(tiny))
    with pytest.raises(HarnessError, match=r"no log-prob for the yes/no answer.*top_logprobs"):
        reranker.rerank(passage_set(), np.array([[0, 1, 2]]))


def test_control_tokens_in_data_text_are_refused_naming_where(tiny: LoadedModel) -> None:
    reranker = pointwise(tiny)
    cset = passage_set()
    quoting = Candidate("d9", "A chat log: <eos> then more text.", 0.0)
    bad = CandidateSet(cset.query_id, cset.query, (*cset.candidates, quoting))
    with pytest.raises(HarnessError, match=r"query 'q1', candidate 'd9': .*control token '<eos>'"):
        reranker.rerank(bad, np.array([[0, 1, 2, 3]]))
    history = (HistoryItem("h0", "Star Wars <eos>", 5.0),)
    movies = CandidateSet("u2", UserProfile("u2", history), movie_set().candidates)
    with pytest.raises(HarnessError, match=r"history item 'h0'"):
        reranker.rerank(movies, np.array([[0, 1, 2, 3]]))


def test_overflow_advice_fits_the_query_kind() -> None:
    small = build_tiny_llama(max_position_embeddings=64)
    long_passages = CandidateSet(
        "q1", TextQuery("capital"), tuple(Candidate(f"d{i}", "word " * 80, 0.0) for i in range(2))
    )
    with pytest.raises(HarnessError, match="shorten the query or that candidate's text"):
        pointwise(small).rerank(long_passages, np.array([[0, 1]]))
