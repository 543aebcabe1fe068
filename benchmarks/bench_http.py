"""Requests per second and per-order latency of FIRST over HTTP at several concurrency levels.

Starts llama.cpp's OpenAI-compatible server on a free loopback port serving the embedded
SmolLM2 GGUF (or uses ``--base-url``), then runs the same FIRST workload through the harness
runner once per concurrency level (1, 2, 4, 8 by default) with the request cache OFF, so
every level sends every request, and prints one table side by side.

Usage::

    .venv/bin/python benchmarks/bench_http.py
    .venv/bin/python benchmarks/bench_http.py --dataset ../shared/data/msmarco-dl19 \\
        --queries 2 --depth 20 --perms 3 --levels 1,2,4,8

Per-order latency is the wall time of the call that reranked the order (batch size 1: one
order per call, its windows sequential). Requests/s is requests sent / wall time of the
level. Note what the numbers measure: llama-cpp-python's server evaluates one request at a
time, so on it concurrency overlaps only HTTP, tokenization and queueing; a batching server
(vLLM, SGLang, TGI) is where concurrency buys throughput.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _write_preset(folder: Path, base_url: str, concurrency: int, window: int, stride: int) -> Path:
    params = {
        "model": "smollm2-135m",
        "base_url": base_url,
        "concurrency": concurrency,
        "cache": False,
        "window_size": window,
        "stride": stride,
        "max_candidate_words": 60,
        "top_logprobs": 20,
    }
    lines = ["name: first-http-bench", "adapter: first", "backend: openai", "params:"]
    lines += [f"  {key}: {json.dumps(value)}" for key, value in params.items()]
    path = folder / f"first-c{concurrency}.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _level(args: argparse.Namespace, base_url: str, concurrency: int, work: Path) -> dict:
    from harness.config import RunConfig
    from harness.results.store import iter_samples
    from harness.runner import execute_run, prepare_run

    preset = _write_preset(work, base_url, concurrency, args.window, args.stride)
    out = work / f"run-c{concurrency}"
    config = RunConfig(
        reranker=str(preset),
        dataset=args.dataset,
        queries=args.queries,
        depth=args.depth,
        perms=args.perms,
        batch_size=1,
        out=str(out),
    ).validate()
    prepared = prepare_run(config)
    started = time.perf_counter()
    results = execute_run(prepared)
    wall = time.perf_counter() - started
    latencies = sorted(s.facts["call_latency_ms"] for s in iter_samples(out))
    requests = results.counts["requests"]
    return {
        "concurrency": concurrency,
        "orders": len(latencies),
        "requests": requests,
        "wall_s": wall,
        "requests_per_s": requests / wall,
        "p50_order_ms": statistics.median(latencies),
        "p95_order_ms": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", help="an already running server (default: start llama.cpp)")
    parser.add_argument("--dataset", default="msmarco-dl19")
    parser.add_argument("--queries", type=int, default=2)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--perms", type=int, default=3)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--stride", type=int, default=5)
    parser.add_argument("--levels", default="1,2,4,8")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    from harness.backends.llama_server import embedded_server

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.base_url:
            _level(args, args.base_url, max(levels), _warm(work))  # warm-up, not reported
            rows = [_level(args, args.base_url, c, work) for c in levels]
        else:
            with embedded_server(threads=args.threads, log_path=work / "server.log") as server:
                _level(args, server.base_url, max(levels), _warm(work))  # warm-up
                rows = [_level(args, server.base_url, c, work) for c in levels]
    header = ["concurrency", "orders", "requests", "wall_s", "requests/s", "p50 order ms", "p95"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for row in rows:
        print(
            f"{row['concurrency']} | {row['orders']} | {row['requests']} | {row['wall_s']:.1f} | "
            f"{row['requests_per_s']:.2f} | {row['p50_order_ms']:.0f} | {row['p95_order_ms']:.0f}"
        )
    sys.stdout.flush()


def _warm(work: Path) -> Path:
    """A separate folder for the warm-up level (its run is not reported)."""
    folder = work / "warm"
    folder.mkdir()
    return folder


if __name__ == "__main__":
    main()
