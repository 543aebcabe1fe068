"""benchmarks/flops_needed.py: the FLOPs a call needs, checked against hand computations on
a tiny config and against the real InvariRank / lft / FIRST paths on a tiny random Llama."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import benchmark_script

pytest.importorskip("torch", reason="the llm extra (torch) is not installed")
pytest.importorskip("transformers", reason="the llm extra (transformers) is not installed")

from harness.backends.transformers_backend import TransformersBackend
from harness.data.model import Candidate, CandidateSet, TextQuery
from harness.models.loading import LoadedModel, build_tiny_llama
from harness.rerankers.base import RunContext
from harness.rerankers.methods.first import FirstReranker
from harness.rerankers.methods.invarirank import (
    SEPARATOR_GROUP,
    CausalListwiseReranker,
    InvariRankReranker,
    invariant_allowed,
)
from harness.rerankers.params import FirstParams, MarkerParams

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def flops():
    with benchmark_script("flops_needed") as module:
        yield module


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return build_tiny_llama(seed=0)


def passages() -> CandidateSet:
    texts = ("Paris is the capital of France.", "Bread needs yeast.", "The Seine flows north.")
    candidates = tuple(Candidate(f"d{i}", t, 0.0) for i, t in enumerate(texts))
    return CandidateSet("q1", TextQuery("capital of france"), candidates)


def test_per_token_counts_of_the_tiny_config_by_hand(flops, tiny) -> None:
    shape = flops.ModelShape.of(tiny.model.config)
    # hidden 64, 4 heads of 16, 2 kv heads, MLP 128, 2 layers
    per_layer = 64 * 64 + 2 * (64 * 32) + 64 * 64 + 3 * (64 * 128)  # q, k+v, o, gate+up+down
    assert per_layer == 36_864
    assert shape.linear_per_token == 2 * 2 * per_layer
    assert shape.head_per_row == 2 * 64 * tiny.model.config.vocab_size
    assert shape.attention_per_key == 4 * 16 * 4 * 2
    work = flops.Work([flops.Pass(tokens=10, head_rows=3, groups=2, keys=40)])
    total = work.flops(shape)
    assert total["total"] == 10 * 147_456 + 3 * shape.head_per_row + 40 * 512


def test_causal_decode_and_prompt_passes_by_hand(flops) -> None:
    # 3 tokens after 2 cached: keys 3, 4, 5
    assert flops.causal_pass([3], start=2) == flops.Pass(3, 0, 1, 12)
    # rows of 5 and 7 tokens sharing 2: the prefix (keys 1+2) once, then 3 and 5 tokens
    passes = flops.prompt_passes([[1] * 5, [1] * 7], prefix_len=2)
    assert passes == [flops.Pass(2, 0, 1, 3), flops.Pass(8, 2, 2, (3 * 2 + 6) + (5 * 2 + 15))]
    # 3 and 1 generated tokens: two tokens of row 0 fed back (keys 5+1, 5+2); row 1 none
    assert flops.decode_passes([5, 7], [3, 1]) == [flops.Pass(1, 1, 1, 6), flops.Pass(1, 1, 1, 7)]


def test_masked_pass_keeps_only_what_the_reads_need(flops) -> None:
    """Span of 2; blocks ``sep [ITEM] a b [/ITEM]`` and ``sep [ITEM] c [/ITEM]``. Read: a, b
    (from [ITEM], a) and c (from its [ITEM]). Needed: [ITEM] (keys: span + itself = 3), a
    (4), the second [ITEM] (3); not the separators, b, or the [/ITEM]s."""
    s = SEPARATOR_GROUP
    group = np.array([[s, 0, 0, 0, 0, s, 1, 1, 1]])
    allowed = invariant_allowed(group, span=2)
    got = flops.masked_pass(allowed, np.array([0, 0, 0]), np.array([2, 3, 7]))
    assert got == flops.Pass(tokens=3, head_rows=3, groups=2, keys=10)


def invarirank_by_hand(set_tokens, orders: int) -> tuple[int, int, int]:
    """(tokens, keys, read rows): the span once, then per order and candidate its [ITEM] and
    content tokens but the last, token j attending the span and j + 1 segment tokens."""
    span = len(set_tokens.span)
    counts = set_tokens.content_count.tolist()
    tokens = span + orders * sum(counts)
    keys = span * (span + 1) // 2 + orders * sum(c * span + c * (c + 1) // 2 for c in counts)
    return tokens, keys, orders * sum(counts)


@pytest.mark.parametrize("attention", ["segments", "dense"])
def test_invarirank_needs_the_same_on_both_routes(flops, tiny, attention) -> None:
    backend = TransformersBackend(tiny)
    reranker = InvariRankReranker(
        "invarirank", RunContext(batch_size=4), backend, MarkerParams(attention=attention)
    )
    cset = passages()
    orders = np.array([[0, 1, 2], [2, 0, 1]])
    with flops.recorded_needs(backend) as work:
        reranker.rerank(cset, orders)
    assert "masked_logprobs" not in vars(backend)  # the class's methods show through again
    set_tokens, _ = reranker.encode_set(cset)
    tokens, keys, reads = invarirank_by_hand(set_tokens, len(orders))
    assert sum(p.tokens for p in work.passes) == tokens
    assert sum(p.keys for p in work.passes) == keys
    assert sum(p.head_rows for p in work.passes) == reads


def test_lft_needs_each_row_up_to_its_last_read(flops, tiny) -> None:
    backend = TransformersBackend(tiny, prefix_sharing=False)
    reranker = CausalListwiseReranker("lft", RunContext(batch_size=4), backend, MarkerParams())
    cset = passages()
    with flops.recorded_needs(backend) as work:
        reranker.rerank(cset, np.array([[0, 1, 2], [1, 2, 0]]))
    set_tokens, _ = reranker.encode_set(cset)
    span, length = len(set_tokens.span), len(set_tokens.tokens)
    row = length - 2  # not the last content token (its output is not read) nor [/ITEM]
    assert sum(p.tokens for p in work.passes) == span + 2 * row  # counted once, not again
    keys = span * (span + 1) // 2 + 2 * (row * span + row * (row + 1) // 2)
    assert sum(p.keys for p in work.passes) == keys


def test_first_needs_its_prompts_and_one_read_per_window(flops, tiny) -> None:
    backend = TransformersBackend(tiny, prefix_sharing=False)
    reranker = FirstReranker("first", RunContext(batch_size=2), backend, FirstParams())
    seen: list = []
    real = backend.next_token_logprobs

    def spy(batch, token_ids):
        seen.append(batch)
        return real(batch, token_ids)

    backend.next_token_logprobs = spy
    with flops.recorded_needs(backend) as work:
        reranker.rerank(passages(), np.array([[0, 1, 2], [2, 1, 0]]))
    del backend.next_token_logprobs
    prefix = sum(b.prefix_len for b in seen)
    rest = sum(len(r) - b.prefix_len for b in seen for r in b.rows)
    assert sum(p.tokens for p in work.passes) == prefix + rest
    assert sum(p.head_rows for p in work.passes) == sum(len(b.rows) for b in seen) == 2


def test_reference_shapes_and_their_timing_on_the_tiny_model(flops, tiny) -> None:
    """The benchmark's reference: the needed work split by matmul shape (FLOPs kept exactly),
    each shape timed on the model's own weights; its time is Σ FLOPs ÷ rate."""
    with benchmark_script("bench_efficiency") as bench:
        shape = flops.ModelShape.of(tiny.model)
        work = flops.Work([flops.Pass(300, 12, 4, 9000), *flops.decode_passes([50, 60], [3, 2])])
        shapes = bench.reference_shapes(work, shape)
        assert sum(shapes.values()) == pytest.approx(work.flops(shape)["total"])
        assert ("linear", 300, 0) in shapes and ("attention", 75, 30) in shapes
        assert ("linear", 2, 0) in shapes and ("linear", 1, 0) in shapes  # decoding steps
        assert [bench.bucket(v) for v in (0.4, 37.4, 1234, 98765)] == [1, 37, 1200, 99000]
        reference = bench.Reference(tiny.model)
        took = reference.seconds(shapes)
        assert np.isfinite([took.cpu, took.wall]).all() and min(took.cpu, took.wall) > 0
