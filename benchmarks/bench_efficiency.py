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

One process, one model (SmolLM2-135M, fp32, CPU), the same candidate sets and shown orders
for every method; each method's call takes ``--orders`` orders of one set (ms/order = call
time ÷ orders; pointwise scores a set once for all its orders, as in a run). Timings are
medians over sets x repeats after one warm-up call per method on another set.

Usage::

    .venv/bin/python benchmarks/bench_efficiency.py
    .venv/bin/python benchmarks/bench_efficiency.py --datasets msmarco-dl19 --orders 4 \\
        --methods invarirank-dense,invarirank

On a shared machine other processes inflate the times (the load average is printed): compare
ratios from one run, not numbers across runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

METHODS = ("invarirank-dense", "invarirank", "lft", "pointwise", "first", "rankgpt")
DATASETS = ("movielens-100k", "msmarco-dl19")


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
    args = parser.parse_args()

    import torch

    from harness.models.loading import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    rate = matmul_rate()
    print(
        f"model {args.model} (fp32, cpu), {torch.get_num_threads()} torch thread(s), "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
        f"measured fp32 matmul rate {rate / 1e9:.0f} GFLOP/s"
    )
    methods = args.methods.split(",")
    rows = []
    for name in args.datasets.split(","):
        sets = candidate_sets(name, args.queries + 1, args.depth)
        rng = np.random.default_rng(0)
        orders = [np.stack([rng.permutation(len(s)) for _ in range(args.orders)]) for s in sets]
        for method in methods:
            rows.append(measure(name, method, loaded, sets, orders, args.repeats, rate))
            print(f"  {name} {method}: {rows[-1].ms_per_order:.0f} ms/order", flush=True)
    report(rows, methods)


def candidate_sets(name: str, count: int, depth: int) -> list[Any]:
    from harness.data.registry import load_dataset, resolve_card, select

    sets = select(load_dataset(resolve_card(name)), queries=count, depth=depth).sets
    return list(sets)


def build(method: str, loaded: Any, batch: int) -> Any:
    """A fresh reranker (own backend and prefix cache) on the shared weights."""
    from harness.backends.transformers_backend import TransformersBackend
    from harness.rerankers.base import RunContext
    from harness.rerankers.first import FirstReranker
    from harness.rerankers.invarirank import CausalListwiseReranker, InvariRankReranker
    from harness.rerankers.params import FirstParams, MarkerParams, RankGPTParams
    from harness.rerankers.pointwise import PointwiseReranker
    from harness.rerankers.rankgpt import RankGPTReranker

    context = RunContext(batch_size=batch)
    backend = TransformersBackend(loaded)
    words = {"max_candidate_words": 100}
    made: dict[str, Callable[[], Any]] = {
        "invarirank-dense": lambda: InvariRankReranker(
            method, context, backend, MarkerParams(attention="dense")
        ),
        "invarirank": lambda: InvariRankReranker(method, context, backend, MarkerParams()),
        "lft": lambda: CausalListwiseReranker(method, context, backend, MarkerParams()),
        "pointwise": lambda: PointwiseReranker(method, context, backend),
        "first": lambda: FirstReranker(method, context, backend, FirstParams(**words)),
        "rankgpt": lambda: RankGPTReranker(method, context, backend, RankGPTParams(**words)),
    }
    return made[method]()


def measure(
    dataset: str,
    method: str,
    loaded: Any,
    sets: list[Any],
    orders: list[np.ndarray],
    repeats: int,
    rate: float,
) -> Row:
    batch = len(orders[0])
    build(method, loaded, batch).rerank(sets[-1], orders[-1])  # warm-up on a set not timed
    times, flops = [], []
    for cset, shown in zip(sets[:-1], orders[:-1], strict=True):
        with counted_flops() as counter:
            build(method, loaded, batch).rerank(cset, shown)
        flops.append(counter.total())
        for _ in range(repeats):
            reranker = build(method, loaded, batch)  # nothing cached from an earlier call
            started = time.perf_counter()
            reranker.rerank(cset, shown)
            times.append((time.perf_counter() - started) / batch)
    seconds = statistics.median(times)
    per_order = statistics.mean(flops) / batch
    return Row(dataset, method, seconds * 1000.0, per_order / 1e9, per_order / rate / seconds)


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
    if "invarirank" in methods and "invarirank-dense" in methods:
        print()
        for d in datasets:
            dense, sparse = by[d, "invarirank-dense"], by[d, "invarirank"]
            print(
                f"{d}: invarirank segments vs dense mask: "
                f"{dense.ms_per_order / sparse.ms_per_order:.2f}x faster per order"
            )


if __name__ == "__main__":
    main()
