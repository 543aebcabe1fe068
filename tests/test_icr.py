"""ICR against its definition on a tiny random Llama: the attention read equals attention
computed by hand from the model's own q/k projections with RoPE; calibration subtracts exactly
the content-free pass; depth truncation equals the full pass restricted to the selected heads;
ICR's token masking on a textbook case."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="the llm extra (torch) is not installed")
pytest.importorskip("transformers", reason="the llm extra (transformers) is not installed")

import torch

from harness.backends.base import QueryAttention
from harness.backends.transformers_backend import TransformersBackend
from harness.data.model import Candidate, CandidateSet, HistoryItem, TextQuery, UserProfile
from harness.errors import HarnessError
from harness.models.loading import build_tiny_llama
from harness.rerankers.base import RunContext
from harness.rerankers.methods.icr import (
    IcrParams,
    IcrReading,
    IcrReranker,
    SetTokens,
    calibrated_scores,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def backend() -> TransformersBackend:
    # A larger init spread than the default makes attention far from uniform, so a wrong
    # position, head or mask shows in the comparison.
    return TransformersBackend(build_tiny_llama(seed=3, initializer_range=0.2))


def passage_set(query: str = "capital of france") -> CandidateSet:
    texts = (
        "Paris is the capital of France.",
        "Bread needs yeast.",
        "Lyon is a city in France with a long history.",
        "Tea.",
    )
    candidates = tuple(Candidate(f"d{i}", t, 1.0 - i) for i, t in enumerate(texts))
    return CandidateSet("q1", TextQuery(query), candidates)


def movie_set() -> CandidateSet:
    past = (HistoryItem("h0", "Star Wars", 5.0, {"year": 1977}), HistoryItem("h1", "Alien", 4.0))
    titles = ("Heat (1995)", "Babe (1995)", "Fargo (1996)")
    candidates = tuple(Candidate(f"m{i}", t, 0.0) for i, t in enumerate(titles))
    return CandidateSet("u1", UserProfile("u1", past), candidates)


def icr(backend: TransformersBackend, **params: object) -> IcrReranker:
    return IcrReranker("icr", RunContext(), backend, IcrParams(**params))  # type: ignore[arg-type]


# -- the attention read, against a hand computation -------------------------------------------


def rotate(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE written out: pairs (i, i + d/2) rotated by position * theta^(-2i/d)."""
    d = x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = positions[:, None].double() * inv_freq[None]
    cos, sin = torch.cos(angles), torch.sin(angles)
    first, second = x[..., : d // 2].double(), x[..., d // 2 :].double()
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


def hand_attention(
    backend: TransformersBackend, tokens: list[int], layer: int, head: int, rows: range
) -> np.ndarray:
    """Softmax(q k^T / sqrt(d)) of one head under the causal mask, from the layer's input,
    its input norm and its own q/k projection weights; averaged over ``rows``."""
    model = backend.loaded.model
    config = model.config
    assert (config.rope_parameters or {}).get("rope_type", "default") == "default"
    theta = float(config.rope_parameters["rope_theta"])
    ids = torch.tensor([tokens])
    with torch.inference_mode():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[layer][0]
        block = model.model.layers[layer]
        x = block.input_layernorm(hidden)
        d = config.hidden_size // config.num_attention_heads
        kv_head = head // (config.num_attention_heads // config.num_key_value_heads)
        q = x @ block.self_attn.q_proj.weight[head * d : (head + 1) * d].T
        k = x @ block.self_attn.k_proj.weight[kv_head * d : (kv_head + 1) * d].T
        positions = torch.arange(len(tokens))
        q, k = rotate(q, positions, theta), rotate(k, positions, theta)
        logits = (q @ k.T) / np.sqrt(d)
        logits = logits.masked_fill(torch.ones_like(logits).triu(1).bool(), float("-inf"))
        weights = torch.softmax(logits, dim=-1)
    return weights[list(rows)].mean(dim=0).numpy()


def test_the_attention_read_equals_attention_computed_by_hand(
    backend: TransformersBackend,
) -> None:
    prefix = [5, 17, 40, 41, 99, 120, 7, 3, 66]
    query = [12, 13, 14, 200]
    read = backend.query_attention(np.array([prefix]), [query], layers=[0, 1])
    assert read.weights.shape == (1, 1, 2, 4, len(prefix))
    rows = range(len(prefix), len(prefix) + len(query))
    for layer in (0, 1):
        for head in range(4):
            expected = hand_attention(backend, prefix + query, layer, head, rows)
            got = read.weights[0, 0, layer, head]
            assert np.abs(got - expected[: len(prefix)]).max() < TOLERANCE
    # the attention is far from uniform here, so the comparison has teeth
    assert read.weights.max() > 3.0 / (len(prefix) + len(query))


def test_batched_prefixes_and_queries_read_as_each_alone(backend: TransformersBackend) -> None:
    prefixes = np.array([[5, 17, 40, 41, 99], [99, 41, 40, 17, 5]])
    queries = [[12, 13, 14, 200, 201], [60]]  # different lengths: the short one is padded
    batched = backend.query_attention(prefixes, queries, layers=[1])
    assert batched.forward_passes == 2 and batched.layers_run == 2
    for p in range(2):
        for q in range(2):
            alone = backend.query_attention(prefixes[p : p + 1], [queries[q]], layers=[1])
            assert np.abs(batched.weights[p, q] - alone.weights[0, 0]).max() < TOLERANCE


def test_reading_leaves_the_model_as_it_was(backend: TransformersBackend) -> None:
    before = backend.loaded.model.config._attn_implementation
    backend.query_attention(np.array([[5, 6, 7]]), [[8, 9]], layers=[0])
    assert backend.loaded.model.config._attn_implementation == before
    with pytest.raises(HarnessError, match=r"layers to read must be in 0\.\.1"):
        backend.query_attention(np.array([[5, 6, 7]]), [[8]], layers=[2])


# -- ICR's score -----------------------------------------------------------------------------


def test_calibration_subtracts_exactly_the_content_free_pass(backend: TransformersBackend) -> None:
    orders = np.array([[0, 1, 2, 3], [3, 1, 0, 2]])
    real = icr(backend, calibration="none").rerank(passage_set(), orders)
    empty = icr(backend, calibration="none").rerank(passage_set("N/A"), orders)
    plain = icr(backend, calibration="plain").rerank(passage_set(), orders)
    for r, e, c in zip(real, empty, plain, strict=True):
        assert r.scores is not None and e.scores is not None and c.scores is not None
        for doc in r.scores:
            assert abs(c.scores[doc] - (r.scores[doc] - e.scores[doc])) < 1e-6
    assert max(abs(v) for v in empty[0].scores.values()) > 0  # the subtraction is not of zeros
    assert real[0].facts.forward_passes == 2 and plain[0].facts.forward_passes == 2


def test_masking_drops_tokens_below_mean_minus_two_std() -> None:
    """A textbook case: nine tokens at +1 and one at -10 (mean -0.1, sample std 3.48): the
    outlier falls below mean - 2 std and is dropped, so the score is 9, not -1."""
    real = np.array([1.0] * 9 + [-10.0, 5.0])
    attention = np.zeros((1, 2, 1, 1, 11))
    attention[0, 0, 0, 0] = real
    spans = np.array([[[0, 10], [10, 11]]])
    reading = IcrReading(attention, spans, (0,), _no_read())
    heads = np.ones((1, 1), dtype=bool)
    assert calibrated_scores(reading, heads, "masked")[0].tolist() == [9.0, 5.0]
    assert calibrated_scores(reading, heads, "plain")[0].tolist() == [-1.0, 5.0]


def _no_read() -> QueryAttention:
    return QueryAttention(np.zeros(0), 1, 0, 0, 0)


def test_depth_truncation_equals_the_full_pass_restricted_to_the_heads(
    backend: TransformersBackend,
) -> None:
    orders = np.array([[0, 1, 2, 3], [2, 3, 0, 1]])
    truncated = icr(backend, heads="0:1,0:3", truncate_depth=True)
    full = icr(backend, heads="0:1,0:3", truncate_depth=False)
    assert truncated.layers == (0,) and full.layers == (0, 1)
    cut, whole = truncated.rerank(passage_set(), orders), full.rerank(passage_set(), orders)
    for a, b in zip(cut, whole, strict=True):
        assert a.scores is not None and b.scores is not None
        assert max(abs(a.scores[d] - b.scores[d]) for d in a.scores) < TOLERANCE
    assert cut[0].facts.extra["layers_run"] == 1 and whole[0].facts.extra["layers_run"] == 2
    # ... and differs from scoring with every head (the restriction is real)
    every = icr(backend).rerank(passage_set(), orders)
    assert every[0].scores != pytest.approx(cut[0].scores, abs=1e-4)


def test_candidate_spans_hold_each_label_and_text(backend: TransformersBackend) -> None:
    reranker = icr(backend)
    tokens = reranker.set_tokens(passage_set())
    prefix, spans = tokens.layout([2, 0, 3, 1])
    decode = backend.tokenizer.decode
    texts = [c.text for c in passage_set().candidates]
    for position, index in enumerate([2, 0, 3, 1]):
        start, end = spans[index]
        assert decode(prefix[start:end]) == f"[{position + 1}] {texts[index]}"
    # every order lays out prefixes of the same length, so orders batch without padding
    assert len(tokens.layout([1, 3, 0, 2])[0]) == len(prefix)
    real, empty = (backend.tokenizer.decode(q) for q in tokens.queries)
    assert "Query: capital of france" in real and "Query: N/A" in empty


def reference_query_rows(tokens: SetTokens, order: list[int], encode: Any) -> range:
    """ICR's reference (``_prepare_input_for_document_retrieval``, query last): the query
    rows start ``separator_length`` tokens after the last document's span ends
    (``query_start_idx = prompt_length + separator_length``; the separator tokenised alone)
    and end at the prompt's last token (``query_end_idx = prompt_length - 1``)."""
    prefix, spans = tokens.layout(order)
    separator_length = len(encode("\n\n"))
    total = len(prefix) + len(tokens.queries[0])
    return range(int(spans[order[-1], 1]) + separator_length, total)


def test_the_query_rows_are_the_references(backend: TransformersBackend) -> None:
    """Rows: closing instruction, separator, query block, chat closing; never the separator
    before the closing instruction, which is prefix (keys only)."""
    reranker, order = icr(backend), [2, 0, 3, 1]
    tokens = reranker.set_tokens(passage_set())
    prefix, _ = tokens.layout(order)
    rows = range(len(prefix), len(prefix) + len(tokens.queries[0]))
    encode = backend.tokenizer.encode
    assert rows == reference_query_rows(
        tokens, order, lambda t: encode(t, add_special_tokens=False)
    )
    assert backend.tokenizer.decode(prefix[-len(tokens.separator) :]) == "\n\n"
    # the attention read is averaged over exactly those rows
    read = reranker.read(passage_set(), np.array([order]))
    whole = prefix + list(tokens.queries[0])
    for layer, head in ((0, 1), (1, 3)):
        expected = hand_attention(backend, whole, layer, head, rows)[: len(prefix)]
        assert np.abs(read.attention[0, 0, layer, head] - expected).max() < TOLERANCE


@pytest.mark.slow
def test_the_query_rows_on_smollm2_start_after_the_separator(smollm2: Any) -> None:
    """On a real BPE tokenizer and chat template: the separator before the closing is one
    "\n\n" token at the end of the prefix (as tokenised alone, the reference's arithmetic),
    and the rows run from "Find" to the opened assistant turn."""
    backend = TransformersBackend(smollm2)
    tokens = icr(backend).set_tokens(passage_set())
    order = [3, 1, 0, 2]
    prefix, _ = tokens.layout(order)
    encode = backend.tokenizer.encode
    rows = reference_query_rows(tokens, order, lambda t: encode(t, add_special_tokens=False))
    assert rows == range(len(prefix), len(prefix) + len(tokens.queries[0]))
    pieces = backend.tokenizer.convert_ids_to_tokens
    assert pieces(prefix[-3:]) == ["Ġhistory", ".", "ĊĊ"]  # the last passage, then the separator
    query = pieces(list(tokens.queries[0]))
    assert query[:2] == ["Find", "Ġthe"] and "Query" in query
    assert backend.tokenizer.decode(list(tokens.queries[0])).endswith(
        "Query: capital of france<|im_end|>\n<|im_start|>assistant\n"
    )


def test_icr_ranks_a_recommendation_set_with_the_history_as_query(
    backend: TransformersBackend,
) -> None:
    reranker = icr(backend)
    real, empty = (backend.tokenizer.decode(q) for q in reranker.set_tokens(movie_set()).queries)
    assert "Star Wars (1977), rated 5" in real and "Star Wars" not in empty
    outputs = reranker.rerank(movie_set(), np.array([[0, 1, 2], [2, 1, 0]]))
    assert all(sorted(o.ranking) == ["m0", "m1", "m2"] for o in outputs)
    assert outputs[0].facts.generated_tokens == 0


def test_bad_params_are_one_line_errors(backend: TransformersBackend) -> None:
    with pytest.raises(HarnessError, match="calibration must be one of masked, plain, none"):
        IcrParams(calibration="mean")
    with pytest.raises(HarnessError, match="heads must be 'layer:head' pairs"):
        IcrParams(heads="3-1")
    with pytest.raises(HarnessError, match=r"head 2:0 is not in the model \(2 layers of 4"):
        icr(backend, heads="2:0")
    with pytest.raises(HarnessError, match="set heads or heads_file, not both"):
        IcrParams(heads="0:0", heads_file="x.json")


def test_the_bundled_preset_is_checked_before_any_model_loads(tmp_path) -> None:
    from harness.rerankers.registry import check_preset, load_preset, resolve_preset

    preset = resolve_preset("icr")
    assert preset.adapter == "icr" and not preset.order_invariant
    check_preset(preset)
    on_vllm = tmp_path / "icr-vllm.yaml"
    on_vllm.write_text("name: icr-vllm\nadapter: icr\nbackend: vllm\n")
    with pytest.raises(HarnessError, match="needs query_attention, which backend 'vllm'"):
        check_preset(load_preset(on_vllm))
    bad = tmp_path / "icr-bad.yaml"
    bad.write_text("name: icr-bad\nadapter: icr\nparams: {heads: '1-2'}\n")
    with pytest.raises(HarnessError, match=r"icr-bad.yaml: reranker 'icr-bad'.*heads must be"):
        check_preset(load_preset(bad))


def test_the_default_templates_render_the_prompt_as_before(backend: TransformersBackend) -> None:
    """The strings ICR rendered before its templates became data files (the query rows now
    start after the separator, which the prefix ends with)."""
    decode = backend.tokenizer.decode
    tokens = icr(backend).set_tokens(passage_set())
    real = decode(tokens.queries[0])
    want = "Find the information in the passages above that is relevant to this search query."
    assert real.startswith(want + "\n\nQuery: capital of france")
    assert decode(tokens.head).endswith("Here are some passages:")
    assert decode(tokens.layout(range(4))[0]).endswith("Tea.\n\n")
    history = decode(icr(backend).set_tokens(movie_set()).queries[0])
    assert history.startswith(
        "Find the candidate items above that this user would enjoy.\n\n"
        "The user rated these items, oldest first:\nStar Wars (1977), rated 5\nAlien, rated 4"
    )


def test_a_prompt_template_file_replaces_its_tasks_default(
    backend: TransformersBackend, tmp_path
) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nkind: attention\ntask: text-ranking\nopening: 'Documents:'\n"
        "closing: 'Which documents answer this?'\nquery: 'Q: {query}'\nseparator: \"\\n\"\n",
        encoding="utf-8",
    )
    reranker = icr(backend, prompt_template=str(path))
    tokens = reranker.set_tokens(passage_set())
    decode = backend.tokenizer.decode
    assert decode(tokens.queries[0]).startswith("Which documents answer this?\nQ: capital of")
    assert decode(tokens.layout(range(4))[0]).endswith("Tea.\n")
    assert decode(tokens.head).endswith("Documents:")
    hashes = reranker.identity()["prompt_sha256"]
    assert list(hashes) == ["icr-recommendation-v1", "mine"]
    with pytest.raises(HarnessError, match="is a numbered template; this reranker renders"):
        IcrParams(prompt_template="numbered-text-v1")
