"""Adaptive order sampling (issue 32) against the fixed ``--perms 20`` design.

**Roster** (fixed in advance, not tuned to a number): six simulated rerankers of known
stability, scoring functions ``score(doc) = base(query, doc) + strength(query) * (n - position)
/ n`` (a primacy bias of known per-query strength), one per kind the issue names: invariant
(InvariRank-like), rare swaps (invariant but for its top two swapping when the best candidate is
shown first, 1 order in n), mildly (0.05) and strongly (0.3) order-sensitive on every query, and
heterogeneous across queries (10% and 25% of the queries sensitive; strength U(0, 0.5)^2). Real
rerankers come in as finished ``--perms 20`` run folders (``--from-run``): the adaptive rule is
replayed on their samples, which it may do exactly, since an adaptive run's orders are a prefix
of the fixed run's (the same seeded stream).

For each simulated reranker and each of ``--seeds`` run seeds, both designs see the very orders
a run of that seed shows (``plan_permutations``):

* fixed: 20 orders per query, and the rule's own normal interval on them;
* adaptive: :func:`harness.adaptive.replay` with ``--perms 20``, at ``--min-perms`` 3 (the
  default) and 2, aiming at the fixed design's median half-width (**equal width**; ±0.02 where
  that width is 0) and, separately, at a user's ``--target`` (±0.02).

The truth is each query's Kendall tau over ``--truth-orders`` independent orders. Printed per
reranker: orders per query, the ratio fixed / adaptive, the realised half-width, the coverage of
the 95% intervals over the seeds, and the **ceiling**: the ratio of the best any allocation of
orders to queries could do at equal width, knowing every query's true variance (greedy on the
U-statistic's variance ``(4 (n - 2) s1 + 2 s2) / (n (n - 1))``, at least ``--min-perms`` each).
With the same per-query estimator no design, adaptive or not, beats that ceiling.

    python benchmarks/bench_adaptive.py --seeds 200
    python benchmarks/bench_adaptive.py --seeds 0 --from-run runs/lft-... --from-run runs/first-...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.adaptive import Target, decide, estimate, query_values, replay
from harness.permutations import plan_permutations

FIXED = 20  # the fixed design's --perms, and the adaptive design's maximum


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

    def ranking(self, query: str, base: np.ndarray, order: np.ndarray) -> np.ndarray:
        """:meth:`scores` vectorised: the output (candidate indices) for one shown order."""
        n = len(order)
        shown = base[order]
        scores = shown + self.strength(query) * (n - np.arange(n)) / n
        if self.flip and shown[0] == shown.max():
            scores[int(np.argsort(shown)[-2])] += 1.0
        return order[np.argsort(-scores, kind="stable")]


def _share(share: float, strength: float) -> Callable[[str], float]:
    """``strength`` on a ``share`` of the queries (chosen by hash), invariant on the rest."""
    return lambda q: strength if _unit(f"share\x1f{q}") < share else 0.0


RERANKERS = (
    Simulated("invariant (InvariRank-like)", lambda q: 0.0),
    Simulated("rare swaps (1 order in n)", lambda q: 0.0, flip=True),
    Simulated("mild, all queries (0.05)", lambda q: 0.05),
    Simulated("strong, all queries (0.3)", lambda q: 0.3),
    Simulated("10% of queries sensitive (0.4)", _share(0.10, 0.4)),
    Simulated("25% of queries sensitive (0.4)", _share(0.25, 0.4)),
    Simulated("strength U(0,0.5)^2 per query", lambda q: 0.5 * _unit(f"u\x1f{q}") ** 2),
)
"""Rare swaps are the hard case for early stopping: three orders of a query often agree."""


def _tau_matrix(outputs: list[np.ndarray]) -> np.ndarray:
    return query_values("kendall_tau", [[int(d) for d in out] for out in outputs])


def _u_variance(n: int, s1: float, s2: float) -> float:
    """Variance of a mean over the pairs of n i.i.d. outputs (a U-statistic of degree 2)."""
    return (4 * (n - 2) * s1 + 2 * s2) / (n * (n - 1))


def ceiling(components: list[tuple[float, float]], lowest: int) -> float:
    """Fixed orders / the fewest orders any allocation needs for the fixed design's variance,
    knowing each query's (s1, s2): greedy on the (convex) variance, ``lowest`` to 20 each."""
    goal = sum(_u_variance(FIXED, s1, s2) for s1, s2 in components)
    counts = [lowest] * len(components)
    now = sum(_u_variance(lowest, s1, s2) for s1, s2 in components)
    while now > goal * (1 + 1e-12):
        gains = [
            _u_variance(k, s1, s2) - _u_variance(k + 1, s1, s2) if k < FIXED else -1.0
            for k, (s1, s2) in zip(counts, components, strict=True)
        ]
        best = int(np.argmax(gains))
        if gains[best] <= 0:
            break
        now -= gains[best]
        counts[best] += 1
    return FIXED * len(components) / sum(counts)


def components(matrix: np.ndarray) -> tuple[float, float]:
    """(s1, s2) of one query from a matrix of per-pair values: the variance of one output's
    mean agreement with the others, and of one pair's value (plug-in)."""
    n = matrix.shape[0]
    pairs = matrix[np.triu_indices(n, 1)]
    s2 = float(np.var(pairs))
    rows = np.nanmean(matrix, axis=1)
    return max(float(np.var(rows)) - s2 / (n - 1), 0.0), s2


def _replay(matrices: dict[str, np.ndarray], target: Target) -> tuple[float, float, int]:
    progress = replay(list(matrices), target, lambda q, n: estimate(matrices[q][:n, :n]))
    assert progress.final is not None
    return progress.final.estimate, progress.final.half_width, sum(progress.counts.values())


def simulated_row(reranker: Simulated, args: argparse.Namespace) -> dict:
    queries = [f"q{k}" for k in range(args.queries)]
    bases = {q: np.array([_unit(f"{q}\x1f{q}-d{i}") for i in range(args.n)]) for q in queries}
    truths, parts = [], []
    for q in queries:
        rng = np.random.default_rng(int(_unit(f"truth\x1f{q}") * 2**40))
        outs = [
            reranker.ranking(q, bases[q], rng.permutation(args.n)) for _ in range(args.truth_orders)
        ]
        matrix = _tau_matrix(outs)
        truths.append(estimate(matrix).mean)
        parts.append(components(matrix))
    truth = float(np.mean(truths))
    drawn = 2 * FIXED if args.two_stage else FIXED  # the rejected two-stage design's maximum
    full = []
    for seed in range(args.seeds):
        full.append(
            {
                q: _tau_matrix(
                    [
                        reranker.ranking(q, bases[q], order)
                        for order in plan_permutations(
                            "random", q, args.n, perms=drawn, seed=seed
                        ).orders[1:]
                    ]
                )
                for q in queries
            }
        )
    runs = [{q: m[:FIXED, :FIXED] for q, m in run.items()} for run in full]
    probe = Target("kendall_tau", 0.02, 3, FIXED)
    fixed = [decide({q: estimate(m) for q, m in run.items()}, probe) for run in runs]
    equal = float(np.median([f.half_width for f in fixed])) or 0.02
    row = {
        "reranker": reranker.name,
        "truth": truth,
        "fixed": _summary([(f.estimate, f.half_width, FIXED * len(queries)) for f in fixed], truth),
        "equal_width": equal,
        "ceiling": {m: ceiling(parts, m) for m in (3, 2)},
    }
    for label, width in (("equal", equal), ("target", args.target)):
        for lowest in (3, 2):
            target = Target("kendall_tau", width, lowest, FIXED)
            row[f"{label}{lowest}"] = _summary([_replay(run, target) for run in runs], truth)
    if args.two_stage:
        for most in (FIXED, 2 * FIXED):
            source = runs if most == FIXED else full
            for counted in (False, True):
                key = f"two-stage max {most}" + (", pilot counted" if counted else "")
                row.setdefault("two_stage", {})[key] = _summary(
                    [two_stage(run, equal, most, counted) for run in source], truth
                )
                row["two_stage"][key]["orders"] /= len(queries)
    for key in [k for k in row if isinstance(row[k], dict) and "orders" in row[k]]:
        row[key]["orders"] /= len(queries)
    return row


def _allocate(spreads: np.ndarray, width: float, queries: int, low: int, high: int) -> np.ndarray:
    """Neyman counts ``n_q ∝ s_q`` in [low, high] whose normal interval is ``width`` wide."""
    z = Target("kendall_tau", width, 3, FIXED).z
    budget = (width * queries / z) ** 2  # sum_q s_q^2 / n_q may be at most this
    counts = np.full(len(spreads), float(low))
    fixed = spreads <= 0
    for _ in range(len(spreads) + 1):
        free = ~fixed
        rest = budget - float(np.sum(spreads[fixed] ** 2 / counts[fixed]))
        if not free.any():
            break
        if rest <= 0:
            counts[free] = high
            break
        want = spreads[free] * spreads[free].sum() / rest
        index = np.where(free)[0]
        low_hit, high_hit = want < low, want > high
        counts[index] = np.clip(want, low, high)
        if not (low_hit.any() or high_hit.any()):
            break
        fixed[index[low_hit | high_hit]] = True
    return np.ceil(counts - 1e-9).astype(int)


def two_stage(
    matrices: dict[str, np.ndarray], width: float, most: int, count_pilot: bool, pilot: int = 3
) -> tuple[float, float, int]:
    """A design evaluated and rejected (docs/adaptive.md): a pilot of ``pilot`` orders per
    query (stop there if the run's interval is narrow enough), then ``n_q ∝ s_q`` more orders
    from the pilot's jackknife, grown together until the target; the estimate on the second
    stage only (valid given the allocation) or, ``count_pilot``, on all orders (biased)."""
    target = Target("kendall_tau", width, pilot, most)
    ids = list(matrices)
    first = decide({q: estimate(matrices[q][:pilot, :pilot]) for q in ids}, target)
    if first.stop:
        return first.estimate, first.half_width, pilot * len(ids)
    spreads = np.sqrt([pilot * max(estimate(matrices[q][:pilot, :pilot]).variance, 0) for q in ids])
    high = most - pilot
    counts = _allocate(spreads, width, len(ids), 3, high)
    while True:
        start = 0 if count_pilot else pilot
        step = decide(
            {
                q: estimate(matrices[q][start : pilot + n, start : pilot + n])
                for q, n in zip(ids, counts, strict=True)
            },
            target,
        )
        if step.half_width <= width or (counts >= high).all():
            return step.estimate, step.half_width, int(pilot * len(ids) + counts.sum())
        grow = min(2.0, (step.half_width / width) ** 2)
        counts = np.minimum(high, np.maximum(counts + 1, np.ceil(counts * grow - 1e-9).astype(int)))


def _summary(results: list[tuple[float, float, int]], truth: float) -> dict:
    est = np.array([r[0] for r in results])
    half = np.array([r[1] for r in results])
    return {
        "orders": float(np.mean([r[2] for r in results])),
        "half": float(half.mean()),
        "coverage": float(np.mean(np.abs(est - truth) <= half + 1e-12)),
    }


def real_row(run_dir: Path, target_width: float) -> dict:
    """A finished fixed run: the rule replayed on its samples (no truth: no coverage)."""
    header = json.loads((run_dir / "results.json").read_text())
    outputs: dict[str, dict[int, list[str]]] = {}
    for line in (run_dir / "samples.jsonl").read_text().splitlines():
        sample = json.loads(line)
        label = str(sample["label"])
        if label.startswith("random:") and not (sample.get("facts") or {}).get("invalid"):
            index = int(label.split(":")[1])
            outputs.setdefault(sample["query_id"], {})[index] = sample["ranking"]
    matrices = {
        q: query_values("kendall_tau", [found[k] for k in sorted(found)][:FIXED])
        for q, found in outputs.items()
    }
    usable = {q: m for q, m in matrices.items() if m.shape[0] >= FIXED}
    probe = Target("kendall_tau", 0.02, 3, FIXED)
    fixed = decide({q: estimate(m) for q, m in usable.items()}, probe)
    equal = fixed.half_width or 0.02
    row = {
        "reranker": f"{header['reranker']['name']} ({header['dataset']['name']}, "
        f"{len(usable)} q, real)",
        "fixed": {"orders": FIXED, "half": fixed.half_width, "coverage": math.nan},
        "equal_width": equal,
        "truth": fixed.estimate,
        "ceiling": {m: ceiling([components(x) for x in usable.values()], m) for m in (3, 2)},
    }
    for label, width in (("equal", equal), ("target", target_width)):
        for lowest in (3, 2):
            found = _replay(usable, Target("kendall_tau", width, lowest, FIXED))
            row[f"{label}{lowest}"] = {
                "orders": found[2] / len(usable),
                "half": found[1],
                "coverage": math.nan,
            }
    return row


def _print(rows: list[dict], label: str, title: str) -> None:
    print(f"\n{title}\n")
    print(
        "| reranker | target ± | fixed ± | fixed cover | adaptive orders/q (min 3) | ratio "
        "| ± | cover | orders/q (min 2) | ratio | cover | ceiling (min 3 / 2) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        a, b, f = r[f"{label}3"], r[f"{label}2"], r["fixed"]
        width = r["equal_width"] if label == "equal" else r.get("user", math.nan)
        ceilings = f"{r['ceiling'][3]:.2f}x / {r['ceiling'][2]:.2f}x"
        print(
            f"| {r['reranker']} | {width:.4f} | {f['half']:.4f} | {_pct(f['coverage'])} "
            f"| {a['orders']:.2f} | {FIXED / a['orders']:.2f}x | {a['half']:.4f} "
            f"| {_pct(a['coverage'])} | {b['orders']:.2f} | {FIXED / b['orders']:.2f}x "
            f"| {_pct(b['coverage'])} | {ceilings if label == 'equal' else '—'} |"
        )
    for lowest in (3, 2):
        ratios = [FIXED / r[f"{label}{lowest}"]["orders"] for r in rows]
        covers = [r[f"{label}{lowest}"]["coverage"] for r in rows]
        covers = [c for c in covers if not math.isnan(c)]
        cover = f"min {min(covers):.1%}, mean {np.mean(covers):.1%}" if covers else "n/a"
        print(
            f"\nmin {lowest}: mean ratio over these {len(rows)} rerankers {np.mean(ratios):.2f}x "
            f"(geometric {math.exp(np.mean(np.log(ratios))):.2f}x, median "
            f"{np.median(ratios):.2f}x); coverage {cover}"
            + (
                f"; ceiling mean {np.mean([r['ceiling'][lowest] for r in rows]):.2f}x"
                if label == "equal"
                else ""
            )
        )


def _pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200, help="0: real runs only")
    parser.add_argument("--queries", type=int, default=43, help="queries per run (DL19: 43)")
    parser.add_argument("--n", type=int, default=20, help="candidates per query")
    parser.add_argument("--truth-orders", type=int, default=300)
    parser.add_argument("--target", type=float, default=0.02, help="a user's half-width")
    parser.add_argument("--from-run", type=Path, action="append", default=[],
                        help="a finished --perms 20 run folder of a real reranker")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write every row here")
    parser.add_argument("--e2e", action="store_true", help="also run harness.evaluate")
    parser.add_argument("--two-stage", action="store_true",
                        help="also the rejected two-stage designs, at equal width")  # fmt: skip
    args = parser.parse_args()
    rows = []
    started = time.perf_counter()
    if args.seeds:
        for reranker in RERANKERS:
            rows.append(simulated_row(reranker, args) | {"user": args.target})
            print(f"{reranker.name}: {time.perf_counter() - started:.0f} s", flush=True)
    real = [real_row(path, args.target) | {"user": args.target} for path in args.from_run]
    print(
        f"\n{args.queries} queries x {args.n} candidates, {args.seeds} seeds, truth over "
        f"{args.truth_orders} orders per query; fixed: --perms {FIXED}; adaptive: --perms {FIXED}"
    )
    if rows or real:
        _print(rows + real, "equal", "At equal interval width (the fixed design's median ±):")
        _print(rows + real, "target", f"At a user's target ±{args.target}:")
    if args.two_stage:
        print("\nTwo-stage designs at equal width (rejected, docs/adaptive.md):\n")
        print("| reranker | design | orders/q | ratio | ± | cover |\n|---|---|---|---|---|---|")
        for r in rows:
            for key, found in r["two_stage"].items():
                print(
                    f"| {r['reranker']} | {key} | {found['orders']:.2f} "
                    f"| {FIXED / found['orders']:.2f}x | {found['half']:.4f} "
                    f"| {found['coverage']:.1%} |"
                )
    if args.json:
        args.json.write_text(json.dumps(rows + real, indent=1))
    if args.e2e:
        end_to_end(args)


def end_to_end(args: argparse.Namespace) -> None:
    """Each simulated reranker through the runner (function rerankers), fixed and adaptive."""
    import tempfile

    from harness import evaluate
    from harness.rerankers.methods.callable import from_scores

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
