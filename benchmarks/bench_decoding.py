"""RankGPT-style decoding before -> after, side by side in one run: ms/order and efficiency.

Two checkouts of harness (this one and ``--compare-with``, e.g. ``git worktree add /tmp/old
d15e31e``) each run in a worker process with its own copy of the model (SmolLM2-135M, fp32,
CPU); this script sends both the same candidate sets and shown orders and times them in
alternation (A, B, B, A, …), so load drift on a shared machine hits both alike. Variants:

* ``before``: the other checkout, orders per call as its runs batch them (its default
  ``--batch-size``);
* ``after-b<N>``: this checkout with the same orders per call as ``before``: what the
  decoding loop alone gained (the reserved KV cache);
* ``after``: this checkout with the orders per call its runs choose (``--batch-size`` unset:
  :func:`harness.rerankers.base.auto_batch_size`), i.e. what a run gains.

Each variant reranks ``--orders`` orders of one set per dataset, in calls of its batch;
ms/order = the calls' time ÷ orders. Efficiency as in ``bench_efficiency.py`` (its FLOP count
and matmul rate, measured here): the FLOPs the work needs (counted once, on this checkout) ÷
the fp32 matmul rate (measured before each timing) ÷ the time; FLOPs per order are counted
on the first order alone (unpadded: padding is not work the method needs). The rankings of
every variant are compared: greedy decoding must give the same ones.

Usage::

    git worktree add --detach /tmp/old19 d15e31e
    .venv/bin/python benchmarks/bench_decoding.py --compare-with /tmp/old19
    .venv/bin/python benchmarks/bench_decoding.py --compare-with /tmp/old19 \\
        --datasets msmarco-dl19 --orders 8 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare-with", required=True, help="a checkout of an older harness")
    parser.add_argument("--datasets", default="movielens-100k,msmarco-dl19")
    parser.add_argument("--depth", type=int, default=20, help="candidates per set")
    parser.add_argument("--orders", type=int, default=8, help="orders reranked per set")
    parser.add_argument("--rounds", type=int, default=2, help="timings per variant")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--warmup", type=int, default=1, help="1: one untimed call per variant")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.threads)
        return
    old = Worker("before", Path(args.compare_with).resolve(), args.threads)
    new = Worker("after", ROOT, args.threads)
    try:
        compare(old, new, args)
    finally:
        old.close()
        new.close()


def compare(old: Worker, new: Worker, args: argparse.Namespace) -> None:
    print(
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; "
        f"{args.orders} orders per set, {args.rounds} round(s)",
        flush=True,
    )
    table = []
    for dataset in args.datasets.split(","):
        ask = {"dataset": dataset, "depth": args.depth, "orders": args.orders}
        before_batch = old.call("batch", **ask)["batch"]
        variants = [
            ("before", old, before_batch),
            (f"after-b{before_batch}", new, before_batch),
            ("after", new, new.call("batch", **ask)["batch"]),
        ]
        per_order = new.call("flops", **ask, batch=1)["flops"]
        for _, worker, batch in variants if args.warmup else ():  # one call on another set
            worker.call("rerank", **ask, batch=batch, warm=True)
        times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
        rates: dict[str, list[float]] = {name: [] for name, _, _ in variants}
        rankings: dict[str, Any] = {}
        for round_ in range(args.rounds):
            turn = variants if round_ % 2 == 0 else variants[::-1]
            for name, worker, batch in turn:
                got = worker.call("rerank", **ask, batch=batch)
                times[name].append(got["seconds"] / args.orders)
                rates[name].append(got["rate"])
                rankings[name] = got["rankings"]
                print(f"  {dataset} {name} (batch {batch}): {times[name][-1] * 1e3:.0f} ms/order")
        for name, _, batch in variants:
            seconds = statistics.median(times[name])
            rate = statistics.median(rates[name])
            table.append((dataset, name, batch, seconds, per_order / rate / seconds, rate))
        same = all(r == rankings["before"] for r in rankings.values())
        table.append((dataset, "identical rankings", same, 0.0, 0.0, 0.0))
    report(table)


def report(table: list[tuple[Any, ...]]) -> None:
    print()
    print(f"{'dataset':<16} {'variant':<12} {'batch':>5} {'ms/order':>9} {'effic.':>6}  vs before")
    base: dict[str, float] = {}
    for dataset, name, batch, seconds, efficiency, _ in table:
        if name == "identical rankings":
            print(f"{dataset:<16} rankings identical across variants: {batch}")
            continue
        base.setdefault(dataset, seconds)
        print(
            f"{dataset:<16} {name:<12} {batch:>5} {seconds * 1e3:>9.0f} {efficiency:>6.2f}  "
            f"{base[dataset] / seconds:.2f}x"
        )


class Worker:
    """One checkout's harness in a child process, answering JSON requests line by line."""

    def __init__(self, name: str, tree: Path, threads: int) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), str(HERE)]))
        command = [sys.executable, str(Path(__file__).resolve()), "--compare-with", "-"]
        command += ["--serve", "--threads", str(threads)]
        self.name = name
        self.process = subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name!r} ended")
        return json.loads(line)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def serve(threads: int) -> None:
    """Answer requests from ``compare`` with the harness found on PYTHONPATH."""
    import torch
    from bench_efficiency import candidate_sets, counted_flops, matmul_rate

    from harness.models.loading import load_model

    if threads:
        torch.set_num_threads(threads)
    loaded = load_model("smollm2-135m")
    sets: dict[tuple[str, int, int], tuple[list[Any], list[np.ndarray]]] = {}
    out = sys.stdout
    sys.stdout = sys.stderr  # anything the harness prints must not mix with the answers
    for line in sys.stdin:
        ask = json.loads(line)
        key = (ask["dataset"], ask["depth"], ask["orders"])
        if key not in sets:
            found = candidate_sets(ask["dataset"], 2, ask["depth"])
            rng = np.random.default_rng(0)
            count = ask["orders"]
            shown = [np.stack([rng.permutation(len(s)) for _ in range(count)]) for s in found]
            sets[key] = (found, shown)
        found, shown = sets[key]
        answer: dict[str, Any]
        if ask["op"] == "batch":
            answer = {"batch": run_batch(ask["orders"])}
        elif ask["op"] == "flops":
            with counted_flops() as counter:
                rerank(loaded, found[0], shown[0][: ask["batch"]], ask["batch"])
            answer = {"flops": counter.total() / ask["batch"]}
        else:
            index, orders = (1, ask["batch"]) if ask.get("warm") else (0, ask["orders"])
            rate = matmul_rate()
            started = time.perf_counter()
            outputs = rerank(loaded, found[index], shown[index][:orders], ask["batch"])
            seconds = time.perf_counter() - started
            answer = {"seconds": seconds, "rate": rate, "rankings": outputs}
        out.write(json.dumps(answer) + "\n")
        out.flush()


def run_batch(orders: int) -> int:
    """Orders per call of a run of this checkout that leaves ``--batch-size`` unset."""
    from harness.config import RunConfig

    if RunConfig().batch_size is not None:
        return int(RunConfig().batch_size)
    from harness.rerankers.base import auto_batch_size
    from harness.rerankers.methods.rankgpt import RankGPTReranker

    return auto_batch_size(RankGPTReranker.batch_cap, orders)


def rerank(loaded: Any, cset: Any, shown: np.ndarray, batch: int) -> list[list[str]]:
    """Rerank ``shown`` in calls of ``batch`` orders with a fresh reranker (nothing cached)."""
    from harness.backends.transformers_backend import TransformersBackend
    from harness.rerankers.base import RunContext
    from harness.rerankers.methods.rankgpt import RankGPTReranker
    from harness.rerankers.params import RankGPTParams

    reranker = RankGPTReranker(
        "rankgpt",
        RunContext(batch_size=batch),
        TransformersBackend(loaded),
        RankGPTParams(max_candidate_words=100),
    )
    rankings = []
    for start in range(0, len(shown), batch):
        for output in reranker.rerank(cset, shown[start : start + batch]):
            rankings.append(list(output.ranking))
    return rankings


if __name__ == "__main__":
    main()
