"""Prefix sharing on the transformers backend: forward tokens and wall time per design.

For each permutation design (random, fixed, sweep, exhaustive, templates) it plans one
query's orders with the harness's own planner, scores them with ``lft`` and ``first`` once
with ``prefix_sharing`` off and once on (interleaved: off, on, off, on … per design and
method), and prints

* the forward tokens each run computed (exact: the backend's ``forward_tokens`` counter,
  padding excluded) and their ratio, next to the tokens of every order's prompt computed
  alone (``alone``: what a backend without any prefix reuse computes; the ``off`` run
  already computes the call's common prefix, the instruction and query, once);
* the wall time of each run and the ratio (the median over ``--repeats`` pairs): noisy on a
  shared machine, the load average is printed with it;
* ``default``: whether a run takes the tree for that call (``tree``) or keeps the plain pass
  (``plain``: the tree would save less than ``SHARING_GAIN``; the benchmark forces the tree
  to measure it);
* whether every ranking is identical and the largest score difference (lft's candidate
  scores, FIRST's identifier masses).

``--methods rankgpt``: RankGPT's window memo instead (``window_memo`` off and on,
interleaved the same way; RankGPT's own sliding windows, ``--window``/``--stride``, greedy):
the windows each run generated (exact: every window of every order off, each distinct window
prompt of a call once on), the tokens it generated, the wall time and whether every ranking is
identical. Calls take ``--rankgpt-batch`` orders (16: what a run takes without
``--batch-size``; 0: every order of the query in one call); the memo lives for one call.

``--count-only`` (FIRST): no forward pass; the prompts come from the reranker's own path (a
backend that records each batch and answers with zeros), the ``on`` tokens from the prefix tree
the backend would walk (``build_prefix_tree`` of the rows after the common prefix), so
``alone``, ``off`` and ``on`` are the exact counts of a real run. It also prints the bound the
prompt puts on ``off ÷ on``: every distinct window computes at least its suffix after the
passages (which follows different tokens in every order), so
``on ≥ P + distinct windows x S``.

Usage (defaults: DL19's first query, the tiny random Llama so that exhaustive at depth 8,
40,320 orders, runs in minutes on a CPU; ``--model smollm2-135m`` for the embedded model)::

    .venv/bin/python benchmarks/bench_prefix_sharing.py
    .venv/bin/python benchmarks/bench_prefix_sharing.py --exhaustive-depth 6 --model smollm2-135m
    .venv/bin/python benchmarks/bench_prefix_sharing.py --designs exhaustive --methods first \
        --words 6 --count-only
    .venv/bin/python benchmarks/bench_prefix_sharing.py --methods rankgpt --exhaustive-depth 6
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

CALL_ORDERS = 64  # orders per call without sharing (the prefix of the query runs once anyway)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="../shared/data/msmarco-dl19")
    parser.add_argument("--model", default="tiny", help="'tiny' (random Llama) or a model name")
    parser.add_argument("--depth", type=int, default=10, help="candidates (non-exhaustive)")
    parser.add_argument("--exhaustive-depth", type=int, default=8)
    parser.add_argument("--words", type=int, default=12, help="words kept per passage")
    parser.add_argument("--count", type=int, default=20, help="orders of random/fixed")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--designs", default="random,fixed,sweep,templates,exhaustive")
    parser.add_argument("--methods", default="lft,first")
    parser.add_argument("--count-only", action="store_true", help="FIRST's token counts only")
    parser.add_argument("--window", type=int, default=4, help="RankGPT's window")
    parser.add_argument("--stride", type=int, default=2, help="RankGPT's stride")
    parser.add_argument("--rankgpt-batch", type=int, default=16, help="orders per call; 0: all")
    args = parser.parse_args()

    import torch

    from harness.backends import transformers_backend
    from harness.data.registry import load_dataset, resolve_card, select

    torch.set_num_threads(1)
    # Measure the tree itself on every design; the "default" column says whether a run
    # takes it (the backend keeps the plain pass where the tree saves less than SHARING_GAIN).
    gain = transformers_backend.SHARING_GAIN
    transformers_backend.SHARING_GAIN = 1.0
    card = resolve_card(args.dataset)
    dataset = select(load_dataset(card), queries=1, depth=max(args.depth, args.exhaustive_depth))
    full = dataset.sets[0]
    loaded = _model(args.model)
    print(
        f"dataset {card.name}, query {full.query_id}; model {args.model}; 1 torch thread; "
        f"load average {os.getloadavg()[0]:.1f} (wall times are noisy on a shared machine; "
        "token counts are exact)"
    )
    header = (
        f"{'design':<12}{'method':<7}{'orders':>7}{'alone':>12}{'tokens off':>12}"
        f"{'tokens on':>11}{'fewer':>7}{'vs alone':>9}{'time off':>10}{'time on':>9}"
        f"{'speed-up':>9}  default  same rankings (max diff)"
    )
    if args.methods == "rankgpt":
        header = MEMO_HEADER
    if args.count_only:
        header = (
            f"{'design':<12}{'method':<7}{'orders':>7}{'distinct':>9}{'alone':>12}"
            f"{'tokens off':>12}{'tokens on':>11}{'fewer':>7}{'vs alone':>9}"
            f"{'P':>5}{'S':>5}  bound off/on (P + distinct x S)"
        )
    print(header)
    for design in args.designs.split(","):
        depth = args.exhaustive_depth if design == "exhaustive" else args.depth
        candidate_set = _trimmed(full, depth, args.words)
        orders = _orders(design, candidate_set, args.count)
        if args.count_only:
            _print_counts(design, _first_counts(loaded, candidate_set, orders))
            continue
        for method in args.methods.split(","):
            if method == "rankgpt":
                _print_memo(design, loaded, candidate_set, orders, args)
                continue
            runs: dict[bool, list] = {False: [], True: []}
            for _ in range(args.repeats):
                for share in (False, True):
                    runs[share].append(_run(loaded, method, candidate_set, orders, share))
            off, on = runs[False][0], runs[True][0]
            same = all(a.ranking == b.ranking for a, b in zip(off[2], on[2], strict=True))
            diff = max(_max_diff(a, b) for a, b in zip(off[2], on[2], strict=True))
            t_off = statistics.median(r[1] for r in runs[False])
            t_on = statistics.median(r[1] for r in runs[True])
            print(
                f"{design:<12}{method:<7}{len(orders):>7}{off[3]:>12,}{off[0]:>12,}{on[0]:>11,}"
                f"{off[0] / on[0]:>6.1f}x{off[3] / on[0]:>8.1f}x"
                f"{t_off:>9.1f}s{t_on:>8.1f}s{t_off / t_on:>8.2f}x  "
                f"{'tree' if on[0] * gain <= off[0] else 'plain':<9}{same} ({diff:.1e})",
                flush=True,
            )


MEMO_HEADER = (
    f"{'design':<12}{'method':<8}{'orders':>7}{'windows off':>12}{'windows on':>11}{'fewer':>7}"
    f"{'gen tok off':>12}{'gen tok on':>11}{'time off':>10}{'time on':>9}{'speed-up':>9}"
    "  same rankings"
)


def _print_memo(design: str, loaded, candidate_set, orders: np.ndarray, args) -> None:
    """RankGPT with the window memo off and on (interleaved, ``--repeats`` pairs)."""
    runs: dict[bool, list] = {False: [], True: []}
    for _ in range(args.repeats):
        for memo in (False, True):
            runs[memo].append(_run_rankgpt(loaded, candidate_set, orders, memo, args))
    (w_off, g_off, _, off), (w_on, g_on, _, on) = runs[False][0], runs[True][0]
    same = all(a.ranking == b.ranking for a, b in zip(off, on, strict=True))
    t_off = statistics.median(r[2] for r in runs[False])
    t_on = statistics.median(r[2] for r in runs[True])
    print(
        f"{design:<12}{'rankgpt':<8}{len(orders):>7}{w_off:>12,}{w_on:>11,}{w_off / w_on:>6.2f}x"
        f"{g_off:>12,}{g_on:>11,}{t_off:>9.1f}s{t_on:>8.1f}s{t_off / t_on:>8.2f}x  {same}",
        flush=True,
    )


def _run_rankgpt(loaded, candidate_set, orders: np.ndarray, memo: bool, args):
    """Windows generated (every order's windows less those it reused), generated tokens,
    wall time and outputs of one RankGPT pass over ``orders`` in calls of the run's size."""
    from harness.backends.transformers_backend import TransformersBackend
    from harness.rerankers.base import RunContext
    from harness.rerankers.methods.rankgpt import RankGPTReranker
    from harness.rerankers.params import RankGPTParams

    params = RankGPTParams(window_size=args.window, stride=args.stride, window_memo=memo)
    step = args.rankgpt_batch or len(orders)
    reranker = RankGPTReranker(
        "rankgpt", RunContext(batch_size=step), TransformersBackend(loaded), params
    )
    started = time.perf_counter()
    outputs = [
        out
        for at in range(0, len(orders), step)
        for out in reranker.rerank(candidate_set, orders[at : at + step])
    ]
    elapsed = time.perf_counter() - started
    windows = sum(
        o.facts.extra["windows"] - o.facts.extra.get("reused_windows", 0) for o in outputs
    )
    generated = sum(o.facts.generated_tokens for o in outputs)
    return windows, generated, elapsed, outputs


def _model(name: str):
    from harness.models.loading import build_tiny_llama, load_model

    if name != "tiny":
        return load_model(name)
    loaded = build_tiny_llama(seed=3, initializer_range=0.5, max_position_embeddings=65536)
    loaded.tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    return loaded


def _trimmed(candidate_set, depth: int, words: int):
    """The top ``depth`` candidates, each text cut to ``words`` words (short prompts keep
    the unshared exhaustive run affordable; sharing does not depend on the length)."""
    from dataclasses import replace

    kept = tuple(
        replace(c, text=" ".join(c.text.split()[:words])) for c in candidate_set.candidates[:depth]
    )
    return replace(candidate_set, candidates=kept)


def _orders(design: str, candidate_set, count: int) -> np.ndarray:
    from harness.permutations import Template, plan_permutations

    n = len(candidate_set)
    templates = (
        Template((0, 1, 2), "bench:1"),
        Template((None, None, 0), "bench:2"),
        Template((1, 0), "bench:3"),
    )
    plan = plan_permutations(
        design,
        candidate_set.query_id,
        n,
        perms=count,
        seed=0,
        relevant_positions=(0, n // 2),
        count={"fixed": count, "templates": max(count // len(templates), 1)}.get(design),
        templates=templates,
    )
    return plan.orders


def _run(loaded, method: str, candidate_set, orders: np.ndarray, share: bool):
    from harness.backends.transformers_backend import TransformersBackend
    from harness.rerankers.base import RunContext
    from harness.rerankers.methods.first import FirstReranker
    from harness.rerankers.methods.invarirank import CausalListwiseReranker
    from harness.rerankers.params import FirstParams, MarkerParams

    backend = TransformersBackend(loaded, prefix_sharing=share)
    # sharing on: every order in one call (one tree); off: calls of CALL_ORDERS orders, as a
    # run makes them (one pass of all 40,320 exhaustive orders would not fit in memory)
    context = RunContext(batch_size=len(orders) if share else CALL_ORDERS)
    n = len(candidate_set)
    if method == "lft":
        reranker = CausalListwiseReranker("lft", context, backend, MarkerParams())
    else:
        params = FirstParams(window_size=n, stride=n, identifiers="alpha")
        reranker = FirstReranker("first", context, backend, params)
    started = time.perf_counter()
    step = len(orders) if share else CALL_ORDERS
    outputs = [
        out
        for at in range(0, len(orders), step)
        for out in reranker.rerank(candidate_set, orders[at : at + step])
    ]
    elapsed = time.perf_counter() - started
    alone = sum(o.facts.prompt_tokens for o in outputs)
    return backend.forward_tokens, elapsed, outputs, alone


def _first_counts(loaded, candidate_set, orders: np.ndarray) -> dict[str, int]:
    """FIRST's exact token counts for ``orders`` (one window each), without a forward pass:
    alone (every window computed alone), off (the common prefix once), on (the prefix tree),
    the common prefix P, the common suffix S after the passages, and the distinct windows."""
    from harness.backends.base import NextTokenScores
    from harness.backends.prefix_tree import build_prefix_tree
    from harness.backends.transformers_backend import TransformersBackend
    from harness.rerankers.base import RunContext
    from harness.rerankers.methods.first import FirstReranker
    from harness.rerankers.params import FirstParams

    batches = []

    class Recording(TransformersBackend):
        """Records each batch; answers zeros (only the prompts are wanted)."""

        def next_token_logprobs(self, batch, token_ids):
            batches.append(batch)
            p = len(batch.rows)
            return NextTokenScores(
                np.zeros((p, len(token_ids))), (1.0,) * p, (True,) * p, (1,) * p, (0,) * p
            )

    n = len(candidate_set)
    params = FirstParams(window_size=n, stride=n, identifiers="alpha")
    reranker = FirstReranker("first", RunContext(), Recording(loaded), params)
    reranker.rerank(candidate_set, orders)
    (batch,) = batches
    start = batch.prefix_len
    rows = [row[start:] for row in batch.rows]
    last = batch.rows[0]
    suffix = min(
        next((k for k in range(min(len(last), len(r))) if last[-1 - k] != r[-1 - k]), len(r))
        for r in batch.rows
    )
    return {
        "orders": len(rows),
        "distinct": len(set(rows)),
        "alone": sum(len(r) for r in batch.rows),
        "off": start + sum(len(r) for r in rows),
        "on": start + build_prefix_tree(rows).tokens,
        "P": start,
        "S": suffix,
    }


def _print_counts(design: str, c: dict[str, int]) -> None:
    bound = c["off"] / (c["P"] + c["distinct"] * c["S"])
    print(
        f"{design:<12}{'first':<7}{c['orders']:>7}{c['distinct']:>9}{c['alone']:>12,}"
        f"{c['off']:>12,}{c['on']:>11,}{c['off'] / c['on']:>6.2f}x{c['alone'] / c['on']:>8.2f}x"
        f"{c['P']:>5}{c['S']:>5}  {bound:.2f}x",
        flush=True,
    )


def _max_diff(a, b) -> float:
    if a.scores:
        return max(abs(a.scores[d] - b.scores[d]) for d in a.scores)
    masses = [
        (x["identifier_mass"], y["identifier_mass"])
        for x, y in zip(
            a.facts.extra["window_details"], b.facts.extra["window_details"], strict=True
        )
    ]
    return max(abs(x - y) for x, y in masses)


if __name__ == "__main__":
    main()
