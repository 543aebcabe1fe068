"""Benchmark FIRST's latency per window against RankGPT-style generation on the same windows.

One process, one model (SmolLM2-135M by default, fp32 on CPU), the same candidate sets and
shown orders for every method; per window it times, interleaved so that load drift hits all
methods alike:

* ``first``: one forward pass over the window prompt, ranked by the identifier logits;
* ``rankgpt``: greedy generation as the model does it (it stops at its end of turn or at the
  window's answer budget: a complete answer's length + 4 tokens);
* ``rankgpt-full``: greedy generation forced to the full answer budget (``ignore_eos``) — the
  cost of a model that writes the complete permutation, which is what the FIRST papers
  compare against.

Usage::

    .venv/bin/python benchmarks/bench_listwise.py
    .venv/bin/python benchmarks/bench_listwise.py --dataset ../shared/data/msmarco-dl19 \\
        --queries 2 --depth 20 --orders 2

Per-window latency is the call's wall time divided by its windows (one order per call).
Medians over queries x orders x repeats, after one warm-up window per method. On a shared
CPU, spinning OpenMP threads stall each other: the default is one torch thread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

METHODS = ("first", "rankgpt", "rankgpt-full")


@dataclass
class Timings:
    """Per-window measurements of one method."""

    ms: list[float] = field(default_factory=list)
    prompt_tokens: list[float] = field(default_factory=list)
    generated_tokens: list[float] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)

    def median_ms(self) -> float:
        return statistics.median(self.ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", default="movielens-100k", help="card name or folder")
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--depth", type=int, default=20, help="candidates per set")
    parser.add_argument("--orders", type=int, default=2, help="shown orders per set")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--window-size", type=int, default=20)
    parser.add_argument("--stride", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    args = parser.parse_args()

    import torch

    from harness.backends.transformers_backend import TransformersBackend
    from harness.data.registry import load_dataset, resolve_card, select
    from harness.models.loading import load_model
    from harness.rerankers.base import RunContext
    from harness.rerankers.methods.first import FirstReranker
    from harness.rerankers.methods.rankgpt import RankGPTReranker
    from harness.rerankers.params import FirstParams, RankGPTParams

    if args.threads:
        torch.set_num_threads(args.threads)
    card = resolve_card(args.dataset)
    sets = select(load_dataset(card), queries=args.queries, depth=args.depth).sets
    loaded = load_model(args.model)
    window = {"window_size": args.window_size, "stride": args.stride, "max_candidate_words": 100}
    context = RunContext(batch_size=1)
    # One backend per method over the same weights: each keeps its own prefix cache, so every
    # method pays for its own shared prefix once per set.
    rerankers = {
        "first": FirstReranker(
            "first", context, TransformersBackend(loaded), FirstParams(**window)
        ),
        "rankgpt": RankGPTReranker(
            "rankgpt", context, TransformersBackend(loaded), RankGPTParams(**window)
        ),
        "rankgpt-full": RankGPTReranker(
            "rankgpt-full",
            context,
            TransformersBackend(loaded),
            RankGPTParams(ignore_eos=True, **window),
        ),
    }
    rng = np.random.default_rng(0)
    print(
        f"model {args.model} ({loaded.identity.dtype}, {loaded.identity.device}), "
        f"{torch.get_num_threads()} torch thread(s); dataset {card.name}: {len(sets)} sets x "
        f"{args.orders} orders x {args.repeats} repeats; window {args.window_size}, stride "
        f"{args.stride}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    for reranker in rerankers.values():  # warm-up: threads, allocator, the first prefix cache
        reranker.rerank(sets[0], np.arange(len(sets[0]))[None])
    timings = {method: Timings() for method in METHODS}
    for cset in sets:
        orders = [np.arange(len(cset))] + [
            rng.permutation(len(cset)) for _ in range(args.orders - 1)
        ]
        for order in orders:
            for _ in range(args.repeats):
                for method in METHODS:
                    record(timings[method], rerankers[method], cset, order)
    report(timings)


def record(timings: Timings, reranker: object, cset: object, order: np.ndarray) -> None:
    started = time.perf_counter()
    (output,) = reranker.rerank(cset, order[None])  # type: ignore[attr-defined]
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    facts = output.facts
    windows = max(int(facts.extra["windows"]), 1)
    timings.ms.append(elapsed_ms / windows)
    timings.prompt_tokens.append(facts.prompt_tokens / windows)
    timings.generated_tokens.append(facts.generated_tokens / windows)
    timings.statuses.extend(
        status for status, n in facts.extra["parse_status_counts"].items() for _ in range(n)
    )


def report(timings: dict[str, Timings]) -> None:
    print()
    header = (
        f"{'method':<13} | {'ms/window':>9} | {'prompt tok':>10} | {'gen tok':>7} | "
        f"{'FIRST / this':>12} | parse statuses"
    )
    print(header)
    print("-" * len(header))
    first = timings["first"].median_ms()
    for method, t in timings.items():
        ratio = first / t.median_ms()
        counts = ", ".join(f"{s} {t.statuses.count(s)}" for s in sorted(set(t.statuses)))
        print(
            f"{method:<13} | {t.median_ms():>9.0f} | {statistics.mean(t.prompt_tokens):>10.0f} | "
            f"{statistics.mean(t.generated_tokens):>7.1f} | {ratio:>12.2f} | {counts}"
        )
    for method in ("rankgpt", "rankgpt-full"):
        saving = 1.0 - first / timings[method].median_ms()
        print(f"FIRST saves {saving:.0%} of the per-window latency of {method}")


if __name__ == "__main__":
    main()
