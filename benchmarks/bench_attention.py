"""Benchmark the decoding-free ICR against FIRST and RankGPT-style generation, per shown order.

One process, one model (SmolLM2-135M by default, fp32 on CPU), the same candidate sets and
shown orders for every method, interleaved so that load drift hits all methods alike:

* ``icr``: one prefix pass per order (all candidates), then one pass over the real and the
  content-free query suffixes on its KV cache; attention read on every layer, query rows only;
* ``icr-heads``: ICR scored with the ``--heads`` given, the pass stopped after the deepest of
  them (depth truncation; the default heads are an arbitrary early set, for cost only);
* ``first``: one forward pass per window (sliding window 20, stride 10);
* ``rankgpt``: greedy generation per window, as the model does it.

Printed per method: median ms per order, forward passes, prompt and generated tokens per
order, the ratio to ICR, and for ICR the attention-weight bytes it materialised at once per
order against what ``output_attentions`` (every layer's full [L, L], real and calibration
pass) would hold. ``--measure-full`` also runs one plain ``output_attentions`` pass (eager
attention) over the first order and prints its measured bytes and time.

Usage::

    .venv/bin/python benchmarks/bench_attention.py --dataset ../shared/data/msmarco-dl19 \\
        --queries 2 --depth 10 --orders 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

METHODS = ("icr", "icr-heads", "first", "rankgpt")


@dataclass
class Costs:
    ms: list[float] = field(default_factory=list)
    passes: list[float] = field(default_factory=list)
    prompt_tokens: list[float] = field(default_factory=list)
    generated_tokens: list[float] = field(default_factory=list)
    attention_bytes: list[float] = field(default_factory=list)
    full_bytes: list[float] = field(default_factory=list)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", default="movielens-100k", help="card name or folder")
    parser.add_argument("--queries", type=int, default=2)
    parser.add_argument("--depth", type=int, default=10, help="candidates per set")
    parser.add_argument("--orders", type=int, default=2, help="shown orders per set")
    parser.add_argument("--heads", default="3:0,5:2,7:5", help="icr-heads: layer:head pairs")
    parser.add_argument("--max-words", type=int, default=60, help="candidate text cut")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    parser.add_argument("--measure-full", action="store_true")
    args = parser.parse_args()

    import torch

    from harness.backends.transformers_backend import TransformersBackend
    from harness.data.registry import load_dataset, resolve_card, select
    from harness.models.loading import load_model
    from harness.rerankers.base import RunContext
    from harness.rerankers.methods.first import FirstReranker
    from harness.rerankers.methods.icr import IcrParams, IcrReranker
    from harness.rerankers.methods.rankgpt import RankGPTReranker
    from harness.rerankers.params import FirstParams, RankGPTParams

    if args.threads:
        torch.set_num_threads(args.threads)
    card = resolve_card(args.dataset)
    sets = select(load_dataset(card), queries=args.queries, depth=args.depth).sets
    loaded = load_model(args.model)
    words = {"max_candidate_words": args.max_words}
    window = {"window_size": 20, "stride": 10, **words}
    context = RunContext(batch_size=1)
    rerankers = {
        "icr": IcrReranker("icr", context, TransformersBackend(loaded), IcrParams(**words)),
        "icr-heads": IcrReranker(
            "icr-heads", context, TransformersBackend(loaded), IcrParams(heads=args.heads, **words)
        ),
        "first": FirstReranker(
            "first", context, TransformersBackend(loaded), FirstParams(**window)
        ),
        "rankgpt": RankGPTReranker(
            "rankgpt", context, TransformersBackend(loaded), RankGPTParams(**window)
        ),
    }
    rng = np.random.default_rng(0)
    print(
        f"model {args.model} ({loaded.identity.dtype}, {loaded.identity.device}), "
        f"{torch.get_num_threads()} torch thread(s); dataset {card.name}: {len(sets)} sets x "
        f"{args.orders} orders; candidates cut to {args.max_words} words; icr-heads "
        f"{args.heads}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    for reranker in rerankers.values():  # warm-up
        reranker.rerank(sets[0], np.arange(len(sets[0]))[None])
    costs = {method: Costs() for method in METHODS}
    for cset in sets:
        orders = [np.arange(len(cset))] + [
            rng.permutation(len(cset)) for _ in range(args.orders - 1)
        ]
        for order in orders:
            for method in METHODS:
                record(costs[method], rerankers[method], cset, order)
    report(costs)
    if args.measure_full:
        measure_full(args.model, rerankers["icr"], sets[0])


def record(costs: Costs, reranker: object, cset: object, order: np.ndarray) -> None:
    started = time.perf_counter()
    (output,) = reranker.rerank(cset, order[None])  # type: ignore[attr-defined]
    costs.ms.append((time.perf_counter() - started) * 1000.0)
    facts = output.facts
    costs.passes.append(facts.forward_passes)
    costs.prompt_tokens.append(facts.prompt_tokens)
    costs.generated_tokens.append(facts.generated_tokens)
    costs.attention_bytes.append(facts.extra.get("attention_bytes_per_order", 0))
    costs.full_bytes.append(facts.extra.get("full_attention_bytes_per_order", 0))


def report(costs: dict[str, Costs]) -> None:
    print()
    header = (
        f"{'method':<10} | {'ms/order':>8} | {'passes':>6} | {'prompt tok':>10} | "
        f"{'gen tok':>7} | {'this / icr':>10} | attention MB read (output_attentions MB)"
    )
    print(header)
    print("-" * len(header))
    icr = statistics.median(costs["icr"].ms)
    for method, c in costs.items():
        ms = statistics.median(c.ms)
        memory = ""
        if max(c.full_bytes) > 0:
            memory = (
                f"{statistics.mean(c.attention_bytes) / 2**20:.1f} "
                f"({statistics.mean(c.full_bytes) / 2**20:.0f})"
            )
        print(
            f"{method:<10} | {ms:>8.0f} | {statistics.mean(c.passes):>6.1f} | "
            f"{statistics.mean(c.prompt_tokens):>10.0f} | "
            f"{statistics.mean(c.generated_tokens):>7.1f} | {ms / icr:>10.2f} | {memory}"
        )


def measure_full(model: str, icr: object, cset: object) -> None:
    """One ``output_attentions`` pass (eager) over the first order's prompt with the real
    query: the memory ICR's query-row read avoids, measured."""
    from harness.backends.transformers_backend import TransformersBackend
    from harness.models.loading import load_model

    eager = TransformersBackend(load_model(model, attn_implementation="eager"))
    tokens = icr.set_tokens(cset)  # type: ignore[attr-defined]
    prefix, _ = tokens.layout(range(len(cset)))  # type: ignore[arg-type]
    started = time.perf_counter()
    weights = eager.attention_weights(prefix + list(tokens.queries[0]))
    ms = (time.perf_counter() - started) * 1000.0
    print(
        f"\noutput_attentions, one full pass (real query only, eager): {ms:.0f} ms, "
        f"{weights.nbytes / 2**20:.0f} MB of weights {tuple(weights.shape)}"
    )


if __name__ == "__main__":
    main()
