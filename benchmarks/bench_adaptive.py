"""Adaptive order sampling (issue 32) against the fixed ``--perms 20`` design.

Simulated rerankers of known stability: a scoring function ``score(doc) = base(query, doc) +
strength(query) * (n - position) / n`` (a primacy bias of known per-query strength; strength
0 is order-invariant, like InvariRank), and one that is invariant but for rare flips. For each
reranker and each of ``--seeds`` run seeds, both designs draw the very orders a run of that
seed shows (``plan_permutations``) and apply :mod:`harness.adaptive`'s rule:

* fixed: 20 orders per query, and its normal interval (the same formula the rule uses);
* adaptive: ``--target kendall_tau=W`` with W = the fixed design's median half-width for that
  reranker (equal interval width; 0.02 where the fixed width is 0), ``--min-perms 3``,
  ``--perms 20``.

The truth is each query's Kendall tau over ``--truth-orders`` independent orders (averaged over
queries, the run-level value). Printed: orders used, the ratio, the realised half-width and the
coverage of the 95% intervals over the seeds. ``--e2e`` also runs each reranker through
``harness.evaluate`` (function rerankers, harness/rerankers/callable.py) on the embedded default
data, fixed and adaptive, and prints the orders each run showed.

    python benchmarks/bench_adaptive.py --seeds 200
"""

from __future__ import annotations

import argparse
import hashlib
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.adaptive import Target, decide, estimate, query_values, replay
from harness.permutations import plan_permutations


def _unit(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16) / 16**12


@dataclass(frozen=True)
class Simulated:
    """A reranker whose per-query order sensitivity is known: ``strength(query)``."""

    name: str
    strength: Callable[[str], float]

    flip: bool = False  # order-invariant but for one trigger: see :data:`RERANKERS`

    def scores(self, query: str, docs: list[str]) -> list[float]:
        n = len(docs)
        bias = self.strength(query)
        base = [_unit(f"{query}\x1f{d}") for d in docs]
        scores = [b + bias * (n - i) / n for i, b in enumerate(base)]
        if self.flip and n > 1 and base[0] == max(base):  # the best shown first: swap top 2
            second = int(np.argsort(base)[-2])
            scores[second] += 1.0
        return scores


def _share(share: float, strength: float) -> Callable[[str], float]:
    """``strength`` on a ``share`` of the queries (chosen by hash), invariant on the rest."""
    return lambda q: strength if _unit(f"share\x1f{q}") < share else 0.0


RERANKERS = (
    Simulated("invariant (InvariRank-like)", lambda q: 0.0),
    Simulated("10% queries sensitive", _share(0.10, 0.4)),
    Simulated("25% queries sensitive", _share(0.25, 0.4)),
    Simulated("strength U(0,0.5)", lambda q: 0.5 * _unit(f"u\x1f{q}") ** 2),
    Simulated("all sensitive (0.3)", lambda q: 0.3),
    Simulated("rare flips (1 order in n)", lambda q: 0.0, flip=True),
)
"""The last one is the hard case for early stopping: invariant unless the best candidate is
shown first (1 order in n), when its top two swap; three orders of a query often agree."""


def _ranking(reranker: Simulated, query: str, docs: list[str], order: np.ndarray) -> list[str]:
    shown = [docs[i] for i in order]
    scores = reranker.scores(query, shown)
    return [shown[i] for i in np.argsort(-np.array(scores), kind="stable")]


def simulate(reranker: Simulated, queries: list[str], n: int, seed: int, target: Target) -> dict:
    docs = {q: [f"{q}-d{i}" for i in range(n)] for q in queries}
    outputs = {}
    for q in queries:
        plan = plan_permutations("random", q, n, perms=target.max_perms, seed=seed)
        outputs[q] = [_ranking(reranker, q, docs[q], plan.orders[r]) for r in range(1, len(plan))]

    def estimate_of(q: str, k: int):
        return estimate(query_values("kendall_tau", outputs[q][:k]))

    fixed = decide({q: estimate_of(q, target.max_perms) for q in queries}, target)
    progress = replay(queries, target, estimate_of)
    assert progress.final is not None
    return {
        "fixed": (fixed.estimate, fixed.half_width, target.max_perms * len(queries)),
        "adaptive": (
            progress.final.estimate,
            progress.final.half_width,
            sum(progress.counts.values()),
        ),
    }


def truth(reranker: Simulated, queries: list[str], n: int, orders: int) -> float:
    values = []
    for q in queries:
        docs = [f"{q}-d{i}" for i in range(n)]
        rng = np.random.default_rng(int(_unit(f"truth\x1f{q}") * 2**40))
        outs = [_ranking(reranker, q, docs, rng.permutation(n)) for _ in range(orders)]
        values.append(estimate(query_values("kendall_tau", outs)).mean)
    return float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--queries", type=int, default=43, help="queries per run (DL19: 43)")
    parser.add_argument("--n", type=int, default=20, help="candidates per query")
    parser.add_argument("--truth-orders", type=int, default=1000)
    parser.add_argument("--e2e", action="store_true", help="also run harness.evaluate")
    parser.add_argument("--target", type=float, default=None, help="a fixed target for all")
    args = parser.parse_args()
    queries = [f"q{k}" for k in range(args.queries)]
    rows = []
    for reranker in RERANKERS:
        started = time.perf_counter()
        true = truth(reranker, queries, args.n, args.truth_orders)
        probe = Target("kendall_tau", 0.02, 3, 20)
        widths = [
            simulate(reranker, queries, args.n, s, probe)["fixed"][1] for s in range(10)
        ]  # the fixed design's width does not depend on the target
        width = args.target or float(np.median(widths)) or 0.02
        target = Target("kendall_tau", width, 3, 20)
        runs = [simulate(reranker, queries, args.n, s, target) for s in range(args.seeds)]
        row = {"reranker": reranker.name, "target": width, "truth": true}
        for design in ("fixed", "adaptive"):
            est = np.array([r[design][0] for r in runs])
            half = np.array([r[design][1] for r in runs])
            used = np.array([r[design][2] for r in runs])
            row[design] = {
                "orders": float(used.mean()) / len(queries),
                "half": float(half.mean()),
                "coverage": float(np.mean(np.abs(est - true) <= half + 1e-12)),
            }
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
    print(
        f"{args.queries} queries x {args.n} candidates, {args.seeds} seeds, "
        f"truth over {args.truth_orders} orders per query; adaptive: --min-perms 3 --perms 20"
    )
    print(
        "| reranker | target ± | fixed orders/q | fixed ± | fixed cover | adaptive orders/q "
        "| adaptive ± | adaptive cover | fewer orders |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f, a = r["fixed"], r["adaptive"]
        print(
            f"| {r['reranker']} | {r['target']:.4f} | {f['orders']:.1f} | {f['half']:.4f} "
            f"| {f['coverage']:.1%} | {a['orders']:.2f} | {a['half']:.4f} | {a['coverage']:.1%} "
            f"| {f['orders'] / a['orders']:.1f}x |"
        )
    ratios = [r["fixed"]["orders"] / r["adaptive"]["orders"] for r in rows]
    covers = [r["adaptive"]["coverage"] for r in rows]
    print(
        f"mean ratio {np.mean(ratios):.2f}x (geometric {math.exp(np.mean(np.log(ratios))):.2f}x); "
        f"adaptive coverage min {min(covers):.1%}, mean {np.mean(covers):.1%}"
    )
    if args.e2e:
        end_to_end(args)


def end_to_end(args: argparse.Namespace) -> None:
    """Each simulated reranker through the runner (function rerankers), fixed and adaptive."""
    import json

    from harness import evaluate
    from harness.rerankers.callable import from_scores

    print("\nend to end (harness.evaluate, embedded default data, 20 queries, depth 20):")
    print("| reranker | fixed orders | adaptive orders | rounds | fixed tau | adaptive tau ± |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for k, reranker in enumerate(RERANKERS):
            fn = from_scores(reranker.scores, name=f"simulated_{k}")
            common = {"queries": 20, "depth": 20, "perms": 20, "seed": 0}
            fixed = evaluate(fn, out=f"{tmp}/fixed{k}", **common)
            adaptive = evaluate(fn, out=f"{tmp}/adaptive{k}", target="kendall_tau=0.02", **common)
            record = json.loads((adaptive.run_dir / "adaptive.json").read_text())
            used = sum(q["orders"] for q in record["queries"].values())
            last = record["rounds"][-1]
            print(
                f"| {reranker.name} | {20 * len(record['queries'])} | {used} "
                f"| {len(record['rounds'])} "
                f"| {fixed.results.summary['kendall_tau'].value:.4f} "
                f"| {last['estimate']:.4f} ± {last['half_width']:.4f} |"
            )


if __name__ == "__main__":
    main()
