"""Prefix sharing on the transformers backend: the radix tree itself, and lft / FIRST scored
with and without it give the same scores (within rounding) and the same rankings on a tiny
random Llama and once on SmolLM2; InvariRank never shares across orders."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the llm extra (torch) is not installed")
pytest.importorskip("transformers", reason="the llm extra (transformers) is not installed")

from conftest import SCORE_TOLERANCE, assert_same_up_to_rounding

from harness.backends import transformers_backend
from harness.backends.prefix_tree import build_prefix_tree, level_edges, tree_reads
from harness.backends.transformers_backend import TransformersBackend
from harness.data.model import Candidate, CandidateSet, TextQuery
from harness.models.loading import LoadedModel, build_tiny_llama
from harness.rerankers.base import RunContext
from harness.rerankers.methods.first import FirstReranker
from harness.rerankers.methods.invarirank import CausalListwiseReranker, InvariRankReranker
from harness.rerankers.params import FirstParams, MarkerParams

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_CHAT = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
TEXTS = (
    "Paris is the capital of France.",
    "Bread needs yeast.",
    "The Seine flows north.",
    "Cats sleep a lot.",
    "Lyon is known for silk.",
)


@pytest.fixture(autouse=True)
def always_share(monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend runs the tree only where it saves half the tokens; these small cases save
    less, so the exactness tests take the tree whatever it saves."""
    monkeypatch.setattr(transformers_backend, "SHARING_GAIN", 1.0)


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    loaded = build_tiny_llama(seed=3, initializer_range=0.5)
    loaded.tokenizer.chat_template = TINY_CHAT
    return loaded


def passages(n: int = len(TEXTS)) -> CandidateSet:
    candidates = tuple(Candidate(f"d{i}", t, 0.0) for i, t in enumerate(TEXTS[:n]))
    return CandidateSet("q1", TextQuery("capital of france"), candidates)


def exhaustive(n: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n))), dtype=np.int64)


def samples(outputs, orders: np.ndarray, doc_ids) -> dict:
    return {
        ("q1", i): (tuple(order.tolist()), o.ranking, o.scores or window_scores(o, doc_ids))
        for i, (order, o) in enumerate(zip(orders, outputs, strict=True))
    }


def window_scores(output, doc_ids) -> dict:
    """FIRST has no per-candidate scores: its windows' identifier masses stand in (keyed by
    window so the equality check compares them value by value)."""
    return {
        f"w{i}": d["identifier_mass"] for i, d in enumerate(output.facts.extra["window_details"])
    }


def both(make, loaded: LoadedModel, candidate_set: CandidateSet, orders: np.ndarray):
    """Outputs and forward tokens without and with prefix sharing."""
    runs = {}
    for share in (False, True):
        backend = TransformersBackend(loaded, prefix_sharing=share)
        outputs = make(backend).rerank(candidate_set, orders)
        runs[share] = (samples(outputs, orders, candidate_set.doc_ids), backend.forward_tokens)
    return runs[False], runs[True]


def lft(backend: TransformersBackend) -> CausalListwiseReranker:
    return CausalListwiseReranker("lft", RunContext(batch_size=8), backend, MarkerParams())


def first(backend: TransformersBackend, window: int = 5, stride: int = 5) -> FirstReranker:
    params = FirstParams(window_size=window, stride=stride, identifiers="alpha")
    return FirstReranker("first", RunContext(batch_size=8), backend, params)


def test_tree_holds_each_distinct_prefix_once() -> None:
    rows = [[1, 2, 3, 4], [1, 2, 5], [1, 2, 3, 4], [1, 2], [7, 8]]
    tree = build_prefix_tree(rows)
    assert tree.tokens == 2 + 2 + 1 + 2  # [1 2] [3 4] [5] [7 8]
    for r, row in enumerate(rows):
        path = tree.path(r)
        assert [t for n in path for t in rows[tree.rep[n]][tree.start[n] : tree.end[n]]] == row
    assert tree.terminal[0] == tree.terminal[2]  # duplicate rows end at one node
    node, _, _, index = tree_reads(tree, [np.array([1, 3])] * 3 + [[1], [0]])
    assert len(node) == 4  # column 1 of rows 0-3 is one read; column 3 of rows 0 and 2 one
    assert list(index[0]) == list(index[2]) and index[0][0] == index[3][0]
    # the same hidden state read for two different next tokens is two reads
    _, _, _, index = tree_reads(tree, [[1]] * 4 + [[0]], [[3], [5], [3], [3], [8]])
    assert index[0][0] != index[1][0] and index[0][0] == index[2][0]


def test_lft_shares_prefixes_exactly(tiny: LoadedModel) -> None:
    orders = exhaustive(4)
    (plain, plain_tokens), (shared, shared_tokens) = both(lft, tiny, passages(4), orders)
    assert_same_up_to_rounding(plain, shared, SCORE_TOLERANCE)
    assert [v[1] for v in plain.values()] == [v[1] for v in shared.values()]
    assert shared_tokens * 1.4 < plain_tokens  # 64 candidate blocks run instead of 96


def test_first_shares_prefixes_exactly(tiny: LoadedModel) -> None:
    orders = np.concatenate([exhaustive(4), exhaustive(4)[:3]])  # duplicates read once
    candidate_set = passages(4)
    (plain, plain_tokens), (shared, shared_tokens) = both(
        lambda b: first(b, 4, 2), tiny, candidate_set, orders
    )
    assert_same_up_to_rounding(plain, shared, SCORE_TOLERANCE)
    assert [v[1] for v in plain.values()] == [v[1] for v in shared.values()]
    assert shared_tokens * 1.2 < plain_tokens, (shared_tokens, plain_tokens)


def test_first_logprobs_match_unshared_reads(tiny: LoadedModel) -> None:
    """The backend's reads themselves (not only rankings) agree with the unshared path."""
    reranker = first(TransformersBackend(tiny, prefix_sharing=False), 5, 5)
    from harness.rerankers.methods.listwise import WindowPrompt
    from harness.rerankers.prompts.listwise import identifiers

    labels = identifiers("alpha", 5)
    template = reranker.templates.for_query(passages().query)
    windows = [
        WindowPrompt(
            template.prompt(
                tiny.tokenizer, passages().query, [TEXTS[i] for i in o], labels, prime="["
            ),
            tuple(f"d{i}" for i in o),
            labels,
        )
        for o in exhaustive(5)[::7]
    ]
    batch = reranker.encode(windows)
    ids = reranker.identifier_ids
    plain = TransformersBackend(tiny, prefix_sharing=False).next_token_logprobs(batch, ids)
    shared = TransformersBackend(tiny, prefix_sharing=True).next_token_logprobs(batch, ids)
    np.testing.assert_allclose(shared.logprobs, plain.logprobs, atol=SCORE_TOLERANCE)
    np.testing.assert_allclose(shared.mass, plain.mass, atol=SCORE_TOLERANCE)
    assert shared.top_is_chosen == plain.top_is_chosen


def test_little_sharing_takes_the_plain_pass(
    tiny: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random orders share almost nothing beyond the common prefix: the backend keeps its
    one plain pass (no tree overhead) and computes exactly what it computes unshared."""
    monkeypatch.setattr(transformers_backend, "SHARING_GAIN", 2.0)
    orders = np.array([[0, 1, 2, 3], [1, 2, 3, 0], [2, 3, 0, 1], [3, 0, 1, 2]])
    (plain, plain_tokens), (shared, shared_tokens) = both(lft, tiny, passages(4), orders)
    assert plain_tokens == shared_tokens and plain == shared


def test_invarirank_is_never_shared(tiny: LoadedModel) -> None:
    """InvariRank computes every order's segments whatever the option: the same forward
    tokens and scores with sharing on and off."""
    orders = exhaustive(3)

    def invarirank(backend: TransformersBackend) -> InvariRankReranker:
        return InvariRankReranker("invarirank", RunContext(batch_size=8), backend, MarkerParams())

    (plain, plain_tokens), (shared, shared_tokens) = both(invarirank, tiny, passages(3), orders)
    assert plain_tokens == shared_tokens
    assert plain == shared
    backend = TransformersBackend(tiny, prefix_sharing=True)
    assert "prefix_sharing" not in invarirank(backend).identity()  # never shares
    assert lft(backend).identity()["prefix_sharing"] is True
    assert (
        first(TransformersBackend(tiny, prefix_sharing=False)).identity()["prefix_sharing"] is False
    )


def test_smollm2_lft_and_first_share_exactly(smollm2: LoadedModel) -> None:
    orders = np.array([[0, 1, 2], [0, 2, 1], [1, 0, 2], [0, 1, 2]])
    candidate_set = passages(3)
    for make in (lft, lambda b: first(b, 3, 3)):
        (plain, plain_tokens), (shared, shared_tokens) = both(make, smollm2, candidate_set, orders)
        assert_same_up_to_rounding(plain, shared, SCORE_TOLERANCE)
        assert [v[1] for v in plain.values()] == [v[1] for v in shared.values()]
        assert shared_tokens < plain_tokens


def test_prefix_sharing_is_a_transformers_param() -> None:
    from harness.backends.params import TransformersParams
    from harness.errors import HarnessError
    from harness.rerankers.params import split_params

    assert TransformersParams().prefix_sharing is True
    (engine,) = split_params("preset", {"prefix_sharing": False}, (TransformersParams,))
    assert engine.prefix_sharing is False
    with pytest.raises(HarnessError, match="prefix_sharing' must be true or false"):
        split_params("preset", {"prefix_sharing": "no"}, (TransformersParams,))


def test_plain_causal_passes_in_chunks_equal_one_pass(tiny: LoadedModel) -> None:
    backend = TransformersBackend(tiny, prefix_sharing=False)
    rng = np.random.default_rng(1)
    tokens = rng.integers(5, 200, (5, 9))
    rows, columns = np.nonzero(rng.random((5, 9)) < 0.5)
    keep = columns > 0
    rows, columns = rows[keep], columns[keep]
    prefix = backend.prefix([7, 8, 9])
    whole = backend.causal_logprobs(prefix, 3, tokens, rows, columns)
    chunked = backend.causal_logprobs(prefix, 3, tokens, rows, columns, rows_per_pass=2)
    np.testing.assert_allclose(chunked, whole, atol=SCORE_TOLERANCE)


def test_a_run_resumes_across_prefix_sharing_but_not_across_a_prompt(tmp_path: Path) -> None:
    """Sharing moves scores by rounding only, like the batch shape: a folder started with it
    off (or before the key existed) resumes with it on; a changed prompt is still refused."""
    from harness.errors import HarnessError
    from harness.results.store import IDENTITY_FILE, RunStore
    from harness.runner import _same_reranker

    store = RunStore(tmp_path)
    store.write_json(IDENTITY_FILE, {"prompt_sha256": "a", "model": "m"})
    kept = _same_reranker(store, {"prompt_sha256": "a", "model": "m", "prefix_sharing": True})
    assert kept["prefix_sharing"] is True
    with pytest.raises(HarnessError, match=r"different model or prompt \(prompt_sha256 changed"):
        _same_reranker(store, {"prompt_sha256": "b", "model": "m", "prefix_sharing": False})


def test_tree_walk_fits_free_memory_in_chunks(
    tiny: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With little free memory the tree's levels run in several chunks and read the same
    values as one pass per level and as sharing off; with too little, one clear error."""
    from harness.errors import HarnessError

    blocks = [[11, 12], [13, 14, 15], [16], [17, 18]]
    tokens = np.array([[t for i in o for t in blocks[i]] for o in exhaustive(4)], dtype=np.int64)
    levels = len(level_edges(build_prefix_tree(tokens)))  # 3: the last block is forced
    rows, columns = np.nonzero(np.ones_like(tokens, dtype=bool))
    keep = columns > 0
    rows, columns = rows[keep], columns[keep]

    def scores(share: bool) -> tuple[np.ndarray, int]:
        backend = TransformersBackend(tiny, prefix_sharing=share)
        decoder, passes = backend._decoder, []

        def counted(**kwargs):
            n, edge = kwargs["input_ids"].shape
            cache = kwargs.get("cache")
            past = cache.layers[0].keys.shape[2] if cache is not None else 0
            passes.append(n * (past + edge))  # the positions the pass's cache grows to
            return decoder(**kwargs)

        backend._decoder = counted
        prefix = backend.prefix([7, 8, 9])
        return backend.causal_logprobs(prefix, 3, tokens, rows, columns), passes

    plain, _ = scores(False)
    whole, whole_passes = scores(True)
    per_position = transformers_backend.kv_bytes_per_token(tiny.model)
    # room for about three of the tree's longest rows: every level holds more nodes than that
    budget = 3 * (3 + 2 * tokens.shape[1])
    tight = (budget + 1) * per_position / transformers_backend.DECODE_MEMORY_SHARE
    monkeypatch.setattr(transformers_backend, "free_memory", lambda device: int(tight))
    chunked, chunked_passes = scores(True)
    assert len(whole_passes) == 1 + levels  # the prefix, then one pass per level
    assert len(chunked_passes) > len(whole_passes) + levels, (chunked_passes, whole_passes)
    assert max(chunked_passes) <= budget < max(whole_passes)
    np.testing.assert_allclose(chunked, whole, atol=SCORE_TOLERANCE)
    np.testing.assert_allclose(chunked, plain, atol=SCORE_TOLERANCE)
    monkeypatch.setattr(transformers_backend, "free_memory", lambda device: 4 * per_position)
    with pytest.raises(HarnessError, match=r"prefix sharing: .* lower the batch size") as error:
        scores(True)
    assert "\n" not in str(error.value)
