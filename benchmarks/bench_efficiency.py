"""How close each reranker runs to this machine's matmul rate: ms per order and efficiency.

Efficiency = the FLOPs the work needs ÷ the measured fp32 matmul rate ÷ the measured time.
The FLOPs are counted on one untimed call of the same shape: every matrix multiply torch
runs (``torch.utils.flop_counter``: the projections, the MLPs, the vocabulary projection
where logits are read), plus attention over the (query, key) entries the mask ALLOWS — not
the entries a dense kernel computes — counted at each ``scaled_dot_product_attention`` call
from its mask (4 FLOPs per allowed entry, head dimension and query head: QKᵀ and PV). So a
method that computes blocked entries shows it as lost efficiency, and the two InvariRank
routes (``invarirank-dense``: the full 4-D mask, the reference; ``invarirank``: candidate
segments on the span's cache) need the same FLOPs and differ in time only.

One model (SmolLM2-135M, fp32, CPU), the same candidate sets and shown orders for every
method; each method's call takes ``--orders`` orders of one set (ms/order = call time ÷
orders; pointwise scores a set once for all its orders, as in a run). A cell's first call is
the FLOP-counted one (it also warms the method up); each timed call is a fresh reranker, with
the matmul rate measured just before it, so a sample's efficiency uses the rate of its moment.
Medians over sets x repeats.

``--compare-with CHECKOUT`` prints the table before -> after in one run: one worker process
per checkout (``PYTHONPATH`` = the checkout, so each imports its own ``harness``; this script
drives both), every cell measured old, new, old, new … so that the machine's load hits both
sides alike. Code from before the segments route runs the dense mask for both InvariRank rows.

Usage::

    .venv/bin/python benchmarks/bench_efficiency.py
    .venv/bin/python benchmarks/bench_efficiency.py --datasets msmarco-dl19 --orders 4 \\
        --methods invarirank-dense,invarirank
    git worktree add /tmp/old d15e31e
    .venv/bin/python benchmarks/bench_efficiency.py --compare-with /tmp/old --orders 1 --threads 1

On a shared machine other processes inflate the times (the load average is printed; one torch
thread stalls less than two when the cores are shared): compare ratios from one run, not
numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

METHODS = ("invarirank-dense", "invarirank", "lft", "pointwise", "first", "rankgpt")
DATASETS = ("movielens-100k", "msmarco-dl19")
ROOT = Path(__file__).resolve().parents[1]
REPLY = "@@bench "  # marks a worker's answer line; anything else it prints is passed through


@dataclass(frozen=True)
class Row:
    dataset: str
    method: str
    ms_per_order: float
    gflop_per_order: float
    efficiency: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--queries", type=int, default=1, help="sets timed per dataset")
    parser.add_argument("--depth", type=int, default=20, help="candidates per set")
    parser.add_argument("--orders", type=int, default=2, help="orders per call")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--compare-with",
        metavar="CHECKOUT",
        help="a checkout of older code (e.g. `git worktree add /tmp/old <commit>`): each cell is "
        "measured in it and in this checkout, alternately, and printed before -> after",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = {k: getattr(args, k) for k in ("model", "queries", "depth", "orders", "threads")}
    if args.serve:
        serve(Bench(**settings), sys.stdin, sys.stdout)
        return
    methods, datasets = args.methods.split(","), args.datasets.split(",")
    if args.compare_with:
        compare(Path(args.compare_with), settings, datasets, methods, args.repeats)
        return
    bench = Bench(**settings)
    print(bench.describe())
    rows = []
    for name in datasets:
        for _ in range(args.repeats):  # methods alternate, so load drifts hit them alike
            for method in methods:
                bench.measure(name, method)
        for method in methods:
            rows.append(bench.row(name, method, bench.samples[name, method]))
            print(f"  {name} {method}: {rows[-1].ms_per_order:.0f} ms/order", flush=True)
    report(rows, methods)


class Bench:
    """One model and the candidate sets and shown orders every method is timed on.

    ``measure`` times one call per set (after one FLOP-counted call of the same shape, which
    also warms up that method) and measures the matmul rate just before it, so that a sample's
    efficiency compares its time with the rate of the same moment on a shared machine.
    """

    def __init__(self, model: str, queries: int, depth: int, orders: int, threads: int) -> None:
        import torch

        from harness.models.loading import load_model

        if threads:
            torch.set_num_threads(threads)
        self.loaded = load_model(model)
        self.model, self.queries, self.depth, self.orders = model, queries, depth, orders
        self.sets: dict[str, tuple[list[Any], list[np.ndarray]]] = {}
        self.flops: dict[tuple[str, str], float] = {}
        self.samples: dict[tuple[str, str], list[tuple[float, float]]] = {}

    def describe(self) -> str:
        import torch

        return (
            f"model {self.model} (fp32, cpu), {torch.get_num_threads()} torch thread(s), "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; load average "
            f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; fp32 matmul rate "
            f"{matmul_rate() / 1e9:.0f} GFLOP/s"
        )

    def _sets(self, dataset: str) -> tuple[list[Any], list[np.ndarray]]:
        if dataset not in self.sets:
            sets = candidate_sets(dataset, self.queries, self.depth)
            rng = np.random.default_rng(0)
            shown = [np.stack([rng.permutation(len(s)) for _ in range(self.orders)]) for s in sets]
            self.sets[dataset] = (sets, shown)
        return self.sets[dataset]

    def measure(self, dataset: str, method: str) -> tuple[float, float]:
        """One sample: (seconds per order, matmul FLOP/s measured just before), median over
        the sets; the first sample of a cell counts its FLOPs first."""
        sets, shown = self._sets(dataset)
        key = (dataset, method)
        if key not in self.flops:
            counts = []
            for cset, orders in zip(sets, shown, strict=True):
                with counted_flops() as counter:
                    build(method, self.loaded, self.orders).rerank(cset, orders)
                counts.append(counter.total())
            self.flops[key] = statistics.mean(counts) / self.orders
        times, rates = [], []
        for cset, orders in zip(sets, shown, strict=True):
            reranker = build(method, self.loaded, self.orders)  # nothing cached from before
            rates.append(matmul_rate(seconds=0.5))
            started = time.perf_counter()
            reranker.rerank(cset, orders)
            times.append((time.perf_counter() - started) / self.orders)
        sample = (statistics.median(times), statistics.median(rates))
        self.samples.setdefault(key, []).append(sample)
        return sample

    def row(self, dataset: str, method: str, samples: list[tuple[float, float]]) -> Row:
        """Medians over samples: ms/order, and efficiency = FLOPs / rate / time per sample."""
        flops = self.flops[dataset, method]
        seconds = statistics.median(t for t, _ in samples)
        efficiency = statistics.median(flops / rate / t for t, rate in samples)
        return Row(dataset, method, seconds * 1000.0, flops / 1e9, efficiency)


def serve(bench: Bench, requests: IO[str], replies: IO[str]) -> None:
    """Answer ``{"dataset", "method"}`` lines with one measured row each (``--compare-with``
    runs one such worker per checkout, so each imports its own ``harness``)."""
    import harness

    hello = {"harness": str(Path(harness.__file__).parent), "describe": bench.describe()}
    replies.write(REPLY + json.dumps(hello) + "\n")
    replies.flush()
    for line in requests:
        ask = json.loads(line)
        bench.measure(ask["dataset"], ask["method"])
        row = bench.row(ask["dataset"], ask["method"], bench.samples[ask["dataset"], ask["method"]])
        replies.write(REPLY + json.dumps(asdict(row)) + "\n")
        replies.flush()


class Worker:
    """A ``--serve`` process importing ``harness`` from ``checkout``."""

    def __init__(self, checkout: Path, settings: dict[str, Any]) -> None:
        flags = [f"--{k}={v}" for k, v in settings.items()]
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", *flags],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=checkout,
        )
        self.hello = self._reply()

    def _reply(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY) :])
            sys.stderr.write(line)
        raise SystemExit(f"bench worker exited with {self.process.wait()}")

    def ask(self, dataset: str, method: str) -> Row:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"dataset": dataset, "method": method}) + "\n")
        self.process.stdin.flush()
        return Row(**self._reply())

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait()


def compare(
    old: Path, settings: dict[str, Any], datasets: list[str], methods: list[str], repeats: int
) -> None:
    """Every cell measured in the old checkout and in this one, alternately (old, new, old,
    new …), so that a change in the machine's load hits both sides alike."""
    sides = {"before": Worker(old.resolve(), settings), "after": Worker(ROOT, settings)}
    for side, worker in sides.items():
        print(
            f"{side}: {commit_of(Path(worker.hello['harness']).parent)} "
            f"({worker.hello['harness']}); {worker.hello['describe']}"
        )
    rows: dict[str, list[Row]] = {"before": [], "after": []}
    try:
        for name in datasets:
            for method in methods:
                for _ in range(repeats):
                    got = {side: worker.ask(name, method) for side, worker in sides.items()}
                for side, row in got.items():
                    rows[side].append(row)
                print(
                    f"  {name} {method}: {got['before'].ms_per_order:.0f} -> "
                    f"{got['after'].ms_per_order:.0f} ms/order",
                    flush=True,
                )
    finally:
        for worker in sides.values():
            worker.close()
    report_compare(rows["before"], rows["after"], methods)


def commit_of(checkout: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(checkout), "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()[:72] or "(not a git checkout)"


def candidate_sets(name: str, count: int, depth: int) -> list[Any]:
    from harness.data.registry import load_dataset, resolve_card, select

    sets = select(load_dataset(resolve_card(name)), queries=count, depth=depth).sets
    return list(sets)


def build(method: str, loaded: Any, batch: int) -> Any:
    """A fresh reranker (own backend and prefix cache) on the shared weights.

    Code from before the segments route has no ``attention`` setting: there both InvariRank
    rows run its only route, the dense mask."""
    import dataclasses

    from harness.backends.transformers_backend import TransformersBackend
    from harness.rerankers.base import RunContext
    from harness.rerankers.methods.first import FirstReranker
    from harness.rerankers.methods.invarirank import CausalListwiseReranker, InvariRankReranker
    from harness.rerankers.methods.pointwise import PointwiseReranker
    from harness.rerankers.methods.rankgpt import RankGPTReranker
    from harness.rerankers.params import FirstParams, MarkerParams, RankGPTParams

    context = RunContext(batch_size=batch)
    backend = TransformersBackend(loaded)
    words = {"max_candidate_words": 100}
    routes = {f.name for f in dataclasses.fields(MarkerParams)}
    dense = MarkerParams(attention="dense") if "attention" in routes else MarkerParams()
    made: dict[str, Callable[[], Any]] = {
        "invarirank-dense": lambda: InvariRankReranker(method, context, backend, dense),
        "invarirank": lambda: InvariRankReranker(method, context, backend, MarkerParams()),
        "lft": lambda: CausalListwiseReranker(method, context, backend, MarkerParams()),
        "pointwise": lambda: PointwiseReranker(method, context, backend),
        "first": lambda: FirstReranker(method, context, backend, FirstParams(**words)),
        "rankgpt": lambda: RankGPTReranker(method, context, backend, RankGPTParams(**words)),
    }
    return made[method]()


def matmul_rate(size: int = 576, rows: int = 512, seconds: float = 1.0) -> float:
    """FLOP/s of an fp32 matmul shaped like SmolLM2's MLP input ([rows, 576] x [576, 1536])."""
    import torch

    a, b = torch.randn(rows, size), torch.randn(size, 1536)
    for _ in range(3):
        a @ b
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return 2.0 * rows * size * 1536 * count / (time.perf_counter() - started)


class FlopTally:
    def __init__(self, mode: Any) -> None:
        self.mode = mode
        self.attention = 0.0

    def total(self) -> float:
        counts = self.mode.get_flop_counts().get("Global", {})
        matmuls = sum(v for op, v in counts.items() if "attention" not in str(op))
        return float(matmuls) + self.attention


@contextmanager
def counted_flops() -> Iterator[FlopTally]:
    """Matmul FLOPs from torch's counter; attention FLOPs from the allowed entries only."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    mode = FlopCounterMode(display=False)
    tally = FlopTally(mode)
    real = F.scaled_dot_product_attention

    def counting(query: Any, key: Any, value: Any, attn_mask: Any = None, **kw: Any) -> Any:
        batch, heads, q_len, dim = query.shape
        k_len = key.shape[-2]
        if attn_mask is None:
            offset = k_len - q_len
            per_head = (
                q_len * offset + q_len * (q_len + 1) // 2 if kw.get("is_causal") else q_len * k_len
            )
            allowed = float(batch * heads * per_head)
        else:
            if attn_mask.dtype == torch.bool:
                ok = attn_mask
            else:
                ok = attn_mask > torch.finfo(attn_mask.dtype).min / 2
            ok = ok.expand(batch, ok.shape[1], q_len, k_len)
            allowed = float(ok.sum()) * heads / ok.shape[1]
        tally.attention += 4.0 * dim * allowed
        return real(query, key, value, attn_mask=attn_mask, **kw)

    F.scaled_dot_product_attention = counting
    try:
        with mode:
            yield tally
    finally:
        F.scaled_dot_product_attention = real


def report(rows: list[Row], methods: list[str]) -> None:
    by = {(r.dataset, r.method): r for r in rows}
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    print()
    header = f"{'reranker':<17}" + "".join(
        f" | {d[:16] + ' ms/order':>25} {'GFLOP':>7} {'effic.':>6}" for d in datasets
    )
    print(header)
    print("-" * len(header))
    for method in methods:
        cells = "".join(
            f" | {by[d, method].ms_per_order:>25.0f} {by[d, method].gflop_per_order:>7.2f} "
            f"{by[d, method].efficiency:>6.2f}"
            for d in datasets
        )
        print(f"{method:<17}{cells}")
    print_segments_ratio(by, datasets, methods, "")


def print_segments_ratio(by: dict, datasets: list[str], methods: list[str], label: str) -> None:
    """Per dataset, how much faster the segments route is than the dense-mask reference."""
    if "invarirank" not in methods or "invarirank-dense" not in methods:
        return
    print()
    for d in datasets:
        dense, sparse = by[d, "invarirank-dense"], by[d, "invarirank"]
        print(
            f"{d}{label}: invarirank segments vs dense mask: "
            f"{dense.ms_per_order / sparse.ms_per_order:.2f}x faster per order"
        )


def report_compare(before: list[Row], after: list[Row], methods: list[str]) -> None:
    """The issue's table: ms/order and efficiency per reranker and dataset, before -> after."""
    old = {(r.dataset, r.method): r for r in before}
    new = {(r.dataset, r.method): r for r in after}
    datasets = list(dict.fromkeys(r.dataset for r in after))
    print()
    print("| reranker |" + "".join(f" {d} ms/order | efficiency |" for d in datasets))
    print("|---|" + "---:|---:|" * len(datasets))
    for method in methods:
        cells = "".join(
            f" {old[d, method].ms_per_order:.0f} -> {new[d, method].ms_per_order:.0f} "
            f"({old[d, method].ms_per_order / new[d, method].ms_per_order:.2f}x) |"
            f" {old[d, method].efficiency:.2f} -> {new[d, method].efficiency:.2f} |"
            for d in datasets
        )
        print(f"| {method} |{cells}")
    print_segments_ratio(new, datasets, methods, " (after)")


if __name__ == "__main__":
    main()
