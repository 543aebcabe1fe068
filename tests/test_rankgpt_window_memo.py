"""RankGPT's window memo: a window prompt already answered in a call is reused, not generated
again. Rankings and per-window answers equal those of computing every order alone; the cost
counters hold only computed windows (tiny random Llama, greedy)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="the llm extra (torch) is not installed")
pytest.importorskip("transformers", reason="the llm extra (transformers) is not installed")

from harness.backends.transformers_backend import TransformersBackend
from harness.data.model import Candidate, CandidateSet, TextQuery
from harness.models.loading import LoadedModel, build_tiny_llama
from harness.rerankers.base import RerankOutput, RunContext
from harness.rerankers.methods.rankgpt import RankGPTReranker
from harness.rerankers.params import RankGPTParams
from harness.runner import ROUNDING_ONLY_IDENTITY

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class CountingBackend(TransformersBackend):
    """The real transformers backend, counting the rows it is asked to generate."""

    rows = 0

    def generate(self, batch: Any, request: Any) -> Any:
        self.rows += len(batch.rows)
        return super().generate(batch, request)


def passages(n: int) -> CandidateSet:
    candidates = tuple(Candidate(f"d{i}", f"passage {i} about {i * 7}", 0.0) for i in range(n))
    return CandidateSet("q1", TextQuery("find passage 3"), candidates)


def rerank(
    loaded: LoadedModel, cset: CandidateSet, orders: np.ndarray, memo: bool, **params: Any
) -> tuple[list[RerankOutput], int, RankGPTReranker]:
    backend = CountingBackend(loaded)
    reranker = RankGPTReranker(
        "rankgpt", RunContext(), backend, RankGPTParams(window_memo=memo, **params)
    )
    return reranker.rerank(cset, orders), backend.rows, reranker


def without_marks(details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in d.items() if k != "reused"} for d in details]


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return build_tiny_llama(seed=5, initializer_range=0.5)


def test_exhaustive_orders_share_windows_with_the_same_answers(loaded: LoadedModel) -> None:
    # The two runs generate in batches of different sizes, so this asks the greedy answers
    # not to flip with batch-shape rounding: measured, the smallest top-2 logit gap of any
    # greedy step here is 2.2e-4 at logits up to 20.5 (~100 fp32 ulps), far above the few
    # ulps other kernels (AMX Xeons, oneDNN) round differently.
    cset = passages(6)
    orders = np.array(list(itertools.permutations(range(6))))  # 720; windows [2, 6), [0, 4)
    off, rows_off, _ = rerank(loaded, cset, orders, False, window_size=4, stride=2)
    on, rows_on, reranker = rerank(loaded, cset, orders, True, window_size=4, stride=2)
    assert [o.ranking for o in on] == [o.ranking for o in off]
    for a, b in zip(on, off, strict=True):
        assert without_marks(a.facts.extra["window_details"]) == b.facts.extra["window_details"]
        assert a.facts.extra["parse_status_counts"] == b.facts.extra["parse_status_counts"]
    assert rows_off == 2 * 720
    reused = sum(o.facts.extra["reused_windows"] for o in on)
    assert rows_on == rows_off - reused
    assert rows_on < 360 + 720  # the first step alone: 360 distinct tails of 720 orders
    # a reused window costs nothing: the counts are the computed windows' only
    computed = [d for o in on for d in o.facts.extra["window_details"] if not d.get("reused")]
    assert len(computed) == rows_on
    assert sum(o.facts.generated_tokens for o in on) < sum(o.facts.generated_tokens for o in off)
    assert sum(o.facts.forward_passes for o in on) == sum(o.facts.generated_tokens for o in on)
    assert all("windows" in o.facts.extra for o in on)
    assert reranker.identity()["window_memo"] is True


def test_random_orders_of_a_long_list_share_nothing_and_change_nothing(
    loaded: LoadedModel,
) -> None:
    cset = passages(14)
    rng = np.random.default_rng(1)
    orders = np.stack([rng.permutation(14) for _ in range(6)])
    off, rows_off, _ = rerank(loaded, cset, orders, False, window_size=6, stride=3)
    on, rows_on, _ = rerank(loaded, cset, orders, True, window_size=6, stride=3)
    assert rows_on == rows_off == 6 * 4
    for a, b in zip(on, off, strict=True):
        assert a.ranking == b.ranking
        assert a.facts.extra["reused_windows"] == 0
        assert (a.facts.prompt_tokens, a.facts.generated_tokens) == (
            b.facts.prompt_tokens,
            b.facts.generated_tokens,
        )
        assert a.facts.extra["window_details"] == b.facts.extra["window_details"]
    assert "reused_windows" not in off[0].facts.extra


def test_sampling_keeps_every_window_and_the_switch_resumes_old_runs(
    loaded: LoadedModel,
) -> None:
    cset = passages(4)
    orders = np.array([[0, 1, 2, 3]] * 3)
    outputs, rows, _ = rerank(loaded, cset, orders, True, window_size=4, stride=2)
    assert rows == 1  # one distinct prompt, generated once
    assert [o.facts.extra["reused_windows"] for o in outputs] == [0, 1, 1]
    assert outputs[1].facts.generated_tokens == 0 and outputs[0].facts.generated_tokens > 0
    sampled_outputs, sampled_rows, sampled = rerank(
        loaded, cset, orders, True, window_size=4, stride=2, temperature=1.0
    )
    assert sampled_rows == 3  # a sampled answer's seed depends on the whole call
    assert "reused_windows" not in sampled_outputs[0].facts.extra
    assert sampled.identity()["window_memo"] is False
    assert "window_memo" in ROUNDING_ONLY_IDENTITY  # a folder from before the switch resumes


@pytest.mark.parametrize("memo", [False, True])
def test_over_http_a_reused_window_sends_no_request_and_counts_none(
    tmp_path: Any, memo: bool
) -> None:
    """The fake server (NOT a model) answers ``[1] > [2]``: identical orders show identical
    windows, so with the memo only the first order's are sent; every count read back from
    the stored facts is the requests that were sent."""
    from fake_openai_server import FAKE_MODEL, FakeServer

    from harness.rerankers.registry import build_reranker, resolve_preset
    from harness.usage import HttpUsage, stored_usage, total

    orders = np.array([np.arange(6), np.arange(6), np.arange(6)[::-1]])
    with FakeServer() as server:
        preset = tmp_path / "rankgpt-http.yaml"
        params = {
            "model": FAKE_MODEL,
            "base_url": server.base_url,
            "tokenizer": "tiny-random-llama",
            "window_size": 4,
            "stride": 2,
            "window_memo": memo,
            "retry_backoff": 0.0,
            "cache_dir": str(tmp_path / "cache"),
        }
        lines = ["name: rankgpt-http", "adapter: rankgpt", "backend: openai", "params:"]
        preset.write_text("\n".join([*lines, *(f"  {k}: {v!r}" for k, v in params.items())]))
        reranker = build_reranker(resolve_preset(str(preset)), RunContext())
        outputs = reranker.rerank(passages(6), orders)
        reranker.close()
    facts = [o.facts for o in outputs]
    assert [stored_usage(f.to_dict()) for f in facts] == [f.usage for f in facts]
    sent = total((f.http for f in facts), HttpUsage())
    assert sent.requests == len(server.bodies) == (4 if memo else 6)
    assert len({o.ranking for o in outputs[:2]}) == 1
    if memo:
        assert [f.extra["reused_windows"] for f in facts] == [0, 2, 0]
        assert facts[1].http == HttpUsage() and facts[1].prompt_tokens == 0
