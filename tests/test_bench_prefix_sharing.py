"""benchmarks/bench_prefix_sharing.py --count-only: FIRST's token counts without a forward
pass equal those of real runs with prefix sharing off and on (tiny random Llama)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import benchmark_script

pytest.importorskip("torch", reason="the llm extra (torch) is not installed")
pytest.importorskip("transformers", reason="the llm extra (transformers) is not installed")

from harness.backends import transformers_backend
from harness.data.model import Candidate, CandidateSet, TextQuery

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def bench():
    with benchmark_script("bench_prefix_sharing") as module:
        yield module


def test_count_only_equals_the_tokens_of_real_runs(bench, monkeypatch) -> None:
    # two passages alike, so some windows repeat (read once by the tree)
    texts = ("Fleas live a month.", "The flea cycle.", "The flea cycle.")
    candidates = tuple(Candidate(f"d{i}", t, 0.0) for i, t in enumerate(texts))
    candidate_set = CandidateSet("q", TextQuery("flea life cycle"), candidates)
    orders = np.array(list(itertools.permutations(range(3))))
    loaded = bench._model("tiny")
    counts = bench._first_counts(loaded, candidate_set, orders)
    assert counts["orders"] == 6 and counts["distinct"] == 3
    monkeypatch.setattr(transformers_backend, "SHARING_GAIN", 1.0)  # the tree on every call
    off = bench._run(loaded, "first", candidate_set, orders, share=False)
    on = bench._run(loaded, "first", candidate_set, orders, share=True)
    assert (counts["off"], counts["alone"]) == (off[0], off[3])
    assert counts["on"] == on[0] < counts["off"]
    assert counts["off"] / counts["on"] <= counts["off"] / (
        counts["P"] + counts["distinct"] * counts["S"]
    )
