"""The GPU check (benchmarks/gpu_check.py): its CPU mode end to end, so the script cannot rot
before a GPU runs it, and its pieces against hand-made cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import benchmark_script

from harness.errors import HarnessError
from harness.rerankers.base import CallFacts, RerankOutput

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    with benchmark_script("gpu_check") as module:
        yield module


def test_cpu_mode_runs_every_part(tmp_path: Path) -> None:
    """The whole script at toy sizes, in a fresh process, with no carry folder: every method
    agrees between one order per call and all orders in one call, InvariRank is invariant in
    fp32, every throughput cell is measured, and vLLM's absence is said."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--mode", "cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "gpu-check.json").read_text())
    correctness = result["correctness"]
    assert correctness["ok"]
    assert set(correctness["methods"]) == {
        "invarirank",
        "lft",
        "first",
        "rankgpt",
        "pointwise",
        "icr",
    }
    for method, row in correctness["methods"].items():
        assert row["ok"] and row["swaps_beyond_atol"] == 0, method
        assert row["rankings_equal"] == "2/2", method
    fp32 = correctness["invarirank_invariance"]["float32"]
    assert fp32["invariant"] and fp32["distinct_rankings"] == 1 and fp32["orders"] == 4
    cells = result["throughput"]["cells"]
    assert len(cells) == 2 * 6  # two toy shapes x six methods x one depth
    for cell in cells:
        assert cell["orders_per_s"] > 0 and cell["tokens_per_s"] > 0, cell
        assert 0 < cell["efficiency"] < 1.5, cell  # FLOPs counted / time / matmul rate
    for row in result["throughput"]["memory"].values():
        assert row["largest_orders_per_call"] == 4 and row["oom"] is None
    assert result["vllm"]["status"] == "vLLM not present: untested"
    table = (out / "gpu-check.md").read_text()
    assert "| invarirank |" in table and "vLLM not present: untested" in table


def test_carry_size_is_checked(gpu_check, tmp_path: Path) -> None:
    carry = tmp_path / "carry"
    (carry / "wheels").mkdir(parents=True)
    (carry / "wheels" / "a.whl").write_bytes(b"x" * 3000)
    (carry / "tokenizer.json").write_bytes(b"y" * 1000)
    assert gpu_check.check_carry(carry, limit=5000) == 4000
    with pytest.raises(HarnessError, match=r"over the"):
        gpu_check.check_carry(carry, limit=4000)
    with pytest.raises(HarnessError, match="--prepare"):
        gpu_check.check_carry(tmp_path / "missing")
    assert gpu_check.CARRY_LIMIT == 64 * 2**20


def test_carried_wheels_go_first_on_the_path(gpu_check, tmp_path, monkeypatch) -> None:
    """A carried wheel is unpacked and imported ahead of the environment's packages (here a
    one-module wheel made for the test); the transformers then importable is checked."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    carry = tmp_path / "carry"
    (carry / "wheels").mkdir(parents=True)
    with zipfile.ZipFile(carry / "wheels" / "carry_probe-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("carry_probe_mod.py", "WHERE = __file__\n")
    facts = gpu_check.activate_carry(carry)
    assert facts["wheels"] == ["carry_probe-1.0-py3-none-any.whl"]
    import carry_probe_mod

    assert sys.path[0] in carry_probe_mod.WHERE
    del sys.modules["carry_probe_mod"]


def test_synthetic_passages_follow_dl19_lengths(gpu_check) -> None:
    from harness.models.loading import tiny_tokenizer

    rng = np.random.default_rng(0)
    drawn = gpu_check.sample_lengths(gpu_check.DL19_PASSAGE_TOKENS, 20000, rng)
    got = np.percentile(drawn, np.linspace(0, 100, 11))
    assert np.allclose(got, gpu_check.DL19_PASSAGE_TOKENS, atol=2.5)
    tokenizer = tiny_tokenizer()
    (cset,) = gpu_check.synthetic_sets(tokenizer, depth=100, count=1, seed=0)
    lengths = [len(tokenizer.encode(c.text, add_special_tokens=False)) for c in cset.candidates]
    mean = float(np.mean(gpu_check.sample_lengths(gpu_check.DL19_PASSAGE_TOKENS, 20000, rng)))
    assert abs(np.mean(lengths) - mean) < 0.2 * mean  # whole words: close, not exact
    assert len({c.text for c in cset.candidates}) == 100


def _out(ranking: str, scores: dict[str, float] | None) -> RerankOutput:
    return RerankOutput(tuple(ranking), CallFacts(0.0, 0.0), scores)


def test_compare_outputs_tells_near_ties_from_swaps(gpu_check) -> None:
    reference = [_out("abc", {"a": 3.0, "b": 2.0, "c": 1.9995})]
    tie = gpu_check.compare_outputs(
        reference, [_out("acb", {"a": 3.0, "b": 1.9996, "c": 1.9997})], atol=1e-3
    )
    assert tie["ok"] and tie["near_tie_swaps"] == 1 and tie["swaps_beyond_atol"] == 0
    assert tie["max_score_drift"] == pytest.approx(4e-4)
    swap = gpu_check.compare_outputs(
        reference, [_out("bac", {"a": 1.0, "b": 2.0, "c": 1.9995})], atol=1e-3
    )
    assert not swap["ok"] and swap["swaps_beyond_atol"] == 1
    unscored = gpu_check.compare_outputs([_out("ab", None)], [_out("ba", None)], atol=1e-3)
    assert not unscored["ok"] and unscored["rankings_equal"] == "0/1"


def test_out_of_memory_is_recognised(gpu_check) -> None:
    import torch

    assert gpu_check.is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert gpu_check.is_oom(RuntimeError("CUDA error: out of memory"))
    assert not gpu_check.is_oom(ValueError("shapes do not match"))


def test_gpu_mode_without_cuda_says_so(gpu_check, tmp_path, monkeypatch, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert gpu_check.main(["--mode", "gpu", "--parts", "correctness", "--out", str(tmp_path)]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err
