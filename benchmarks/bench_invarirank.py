"""Benchmark InvariRank against its causal control (lft) on identical tokens.

On the embedded model (SmolLM2-135M, fp32) and the default dataset (MovieLens-100K: 20
candidates, 10 history items per user) it prints, side by side from one run:

* the wall time of one reranker call (the span once, then one forward pass over the
  candidates of ``batch size`` orders of the same set) and the cost per order, InvariRank vs
  lft — the two differ only in the mask and the positions, so the ratio is the price of the
  invariant architecture;
* batched vs one-order-at-a-time throughput (orders per second);
* peak memory: the growth of the worker process's resident-set high-water mark
  (``resource.getrusage(...).ru_maxrss``) from just after the model is loaded to the end of
  the timed passes. tracemalloc would miss torch's allocations. Each (method, batch size)
  pair runs in a fresh worker process so that peaks do not carry over.

Usage::

    .venv/bin/python benchmarks/bench_invarirank.py
    .venv/bin/python benchmarks/bench_invarirank.py --queries 2 --batch-sizes 1,8 --repeats 2

Timings are medians over queries x repeats, after one warm-up call; on a shared machine
other processes inflate them (the load average is printed). When other processes compete for
the cores, torch's spinning OpenMP threads stall each other: run with ``--threads 1`` or
``OMP_WAIT_POLICY=PASSIVE`` in the environment to see the uncontended cost.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from harness.data.model import Candidate, CandidateSet, HistoryItem, UserProfile
from harness.errors import HarnessError

METHODS = ("invarirank", "lft")


@dataclass(frozen=True)
class Measurement:
    method: str
    batch_size: int
    forward_s: float  # median wall time of one call: span + one pass over batch_size orders
    tokens_per_order: float
    peak_rss_growth_mib: float
    threads: int
    score_spread: float  # max over sets and candidates of (max - min) score across orders
    min_score_gap: float  # smallest gap between two candidates' scores of one set

    @property
    def per_order_ms(self) -> float:
        return self.forward_s * 1000.0 / self.batch_size

    @property
    def orders_per_s(self) -> float:
        return self.batch_size / self.forward_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--queries", type=int, default=3, help="candidate sets to time")
    parser.add_argument("--batch-sizes", default="1,4,8", help="orders per forward pass")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per set")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, batch = args.worker
        result = measure(method, int(batch), args.model, args.queries, args.repeats, args.threads)
        print(json.dumps(asdict(result)))
        return
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    print(f"model {args.model}, fp32, {args.queries} sets, {args.repeats} repeats")
    print(
        f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}"
    )
    results = {
        (method, size): run_worker(method, size, args) for size in sizes for method in METHODS
    }
    report(results, sizes)


def run_worker(method: str, batch_size: int, args: argparse.Namespace) -> Measurement:
    command = [
        sys.executable,
        __file__,
        "--worker",
        method,
        str(batch_size),
        f"--model={args.model}",
        f"--queries={args.queries}",
        f"--repeats={args.repeats}",
        f"--threads={args.threads}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"worker {method} x{batch_size} failed:\n{done.stderr[-2000:]}")
    return Measurement(**json.loads(done.stdout.strip().splitlines()[-1]))


def measure(
    method: str, batch_size: int, model: str, queries: int, repeats: int, threads: int
) -> Measurement:
    import torch

    from harness.backends.params import ModelParams, TransformersParams
    from harness.backends.transformers_backend import TransformersBackend
    from harness.rerankers.base import RunContext
    from harness.rerankers.methods.invarirank import CausalListwiseReranker, InvariRankReranker

    if threads:
        torch.set_num_threads(threads)
    sets = candidate_sets(queries)
    cls = InvariRankReranker if method == "invarirank" else CausalListwiseReranker
    context = RunContext(batch_size=batch_size)
    backend = TransformersBackend.open(
        ModelParams(model=model), TransformersParams(), context, f"the {method} benchmark"
    )
    reranker = cls(method, context, backend)
    rng = np.random.default_rng(0)
    orders = [np.stack([rng.permutation(len(c)) for _ in range(batch_size)]) for c in sets]
    baseline = max_rss_kib()
    reranker.rerank(sets[0], orders[0])  # warm-up: thread pool, allocator
    times, spreads, gaps = [], [], []
    for cset, rows in zip(sets, orders, strict=True):
        scores = []
        for _ in range(repeats):
            started = time.perf_counter()
            outputs = reranker.rerank(cset, rows)
            times.append(time.perf_counter() - started)
            scores += [[o.scores[d] for d in cset.doc_ids] for o in outputs if o.scores]
        table = np.array(scores)
        spreads.append(float(np.ptp(table, axis=0).max()))
        gaps.append(float(np.diff(np.sort(table[0])).min()))
    return Measurement(
        method=method,
        batch_size=batch_size,
        forward_s=statistics.median(times),
        tokens_per_order=float(np.mean([reranker.encode_set(c)[0].row_length for c in sets])),
        peak_rss_growth_mib=(max_rss_kib() - baseline) / 1024.0,
        threads=torch.get_num_threads(),
        score_spread=max(spreads),
        min_score_gap=min(gaps),
    )


def candidate_sets(queries: int) -> list[CandidateSet]:
    """The first ``queries`` MovieLens-100K sets; synthetic movie sets if recbole is absent."""
    from harness.data.movielens import load_movielens_100k

    try:
        return list(load_movielens_100k().sets[:queries])
    except HarnessError as exc:
        print(f"MovieLens unavailable ({exc}); using synthetic sets", file=sys.stderr)
        return [synthetic_set(q) for q in range(queries)]


def synthetic_set(q: int, candidates: int = 20, history: int = 10) -> CandidateSet:
    genres = ("Drama", "Comedy", "Thriller", "Romance", "Action", "Sci-Fi", "Animation")
    rng = np.random.default_rng(q)

    def title(i: int) -> str:
        picked = ", ".join(rng.choice(genres, size=2, replace=False))
        return f"Movie {q}-{i} ({1970 + i % 30}) — {picked}"

    past = tuple(HistoryItem(f"h{i}", title(i), float(rng.integers(1, 6))) for i in range(history))
    cands = tuple(Candidate(f"c{i}", title(100 + i), 1.0 / (i + 1)) for i in range(candidates))
    return CandidateSet(f"u{q}", UserProfile(f"u{q}", past), cands)


def max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def report(results: dict[tuple[str, int], Measurement], sizes: list[int]) -> None:
    first = results[(METHODS[0], sizes[0])]
    print(f"torch threads: {first.threads}; tokens per order: {first.tokens_per_order:.0f}")
    print()
    print("Per call (span + one pass over the batch) and per order, InvariRank vs lft, same tokens")
    header = (
        f"{'orders/pass':>11} | {'inv call s':>10} {'inv ms/order':>12} | "
        f"{'lft call s':>10} {'lft ms/order':>12} | {'inv/lft':>7}"
    )
    print(header)
    print("-" * len(header))
    for size in sizes:
        inv, lft = results[("invarirank", size)], results[("lft", size)]
        print(
            f"{size:>11} | {inv.forward_s:>10.3f} {inv.per_order_ms:>12.1f} | "
            f"{lft.forward_s:>10.3f} {lft.per_order_ms:>12.1f} | "
            f"{inv.forward_s / lft.forward_s:>7.2f}"
        )
    print()
    print("Throughput, batched vs one order at a time, and peak memory (ru_maxrss growth)")
    header = (
        f"{'orders/pass':>11} | {'inv orders/s':>12} {'vs x1':>6} {'peak MiB':>9} | "
        f"{'lft orders/s':>12} {'vs x1':>6} {'peak MiB':>9}"
    )
    print(header)
    print("-" * len(header))
    single = {m: results.get((m, 1)) for m in METHODS}
    for size in sizes:
        cells = []
        for method in METHODS:
            r = results[(method, size)]
            base = single[method]
            speedup = f"{r.orders_per_s / base.orders_per_s:.2f}" if base else "n/a"
            cells.append(f"{r.orders_per_s:>12.2f} {speedup:>6} {r.peak_rss_growth_mib:>9.0f}")
        print(f"{size:>11} | " + " | ".join(cells))
    print()
    widest = max(sizes)
    inv, lft = results[("invarirank", widest)], results[("lft", widest)]
    print(
        f"Score spread across the orders of a set at {widest} orders/pass (max over sets "
        f"and candidates): invarirank {inv.score_spread:.1e}, "
        f"lft {lft.score_spread:.1e}; smallest gap between two candidates of a set: "
        f"{inv.min_score_gap:.1e}"
    )
    best = min((results[("invarirank", s)] for s in sizes), key=lambda r: r.per_order_ms)
    per_query = 21 * best.per_order_ms / 1000.0
    print()
    print(
        f"'harness run --reranker invarirank --perms 20' (21 orders/query) at {best.batch_size} "
        f"orders/pass: ~{per_query:.0f} s per query, ~{int(270 // per_query)} queries in 4.5 min"
    )


if __name__ == "__main__":
    main()
