"""What the regression gate can see: its false-alarm rate and its power, measured on real data.

Two experiments on DL19 (43 judged queries, BM25 top-``depth``), with the default gates
(every default metric, Holm across them, alpha 0.05, margins and 3x floors from the registry):

* **False alarms.** The ``identity`` reranker (maximally order-sensitive) is run with
  ``--seeds`` different permutation seeds; every ordered pair of runs is gated against each
  other. Both are the same reranker on independent samples of orders, so every FAIL is a
  false alarm. (The gate itself refuses runs of different seeds as not comparable; here the
  recorded seed is equalised on purpose, to measure the statistics alone.)
* **Power.** ``first-stage`` is the baseline; a degraded reranker demotes the top document of
  a seeded random subset of queries to rank ``--demote-to``. For several subset sizes it
  reports the true mean nDCG@10 drop, how often the gate fails it over ``--trials`` subsets
  (by the test, by the floor) and the drop the verdict says it can detect.

Usage::

    .venv/bin/python benchmarks/bench_gate.py
    .venv/bin/python benchmarks/bench_gate.py --seeds 6 --trials 20 --depth 20

It needs the shared DL19 folder (``../shared/data/msmarco-dl19``); no model is loaded.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from harness.config import RunConfig
from harness.gates.baseline import Baseline, baseline_from_results
from harness.gates.gate import DEFAULT_GATES, evaluate_gate
from harness.metrics.effectiveness import effectiveness
from harness.metrics.registry import MRR, NDCG
from harness.runner import execute_run, prepare_run


def _run(reranker: str, seed: int, args: argparse.Namespace, out: Path) -> Baseline:
    config = RunConfig(
        reranker=reranker,
        dataset=args.dataset,
        perms=args.perms,
        depth=args.depth,
        seed=seed,
        out=str(out / f"{reranker}-{seed}"),
    ).validate()
    results = execute_run(prepare_run(config))
    return baseline_from_results(results, out)


def false_alarms(args: argparse.Namespace, out: Path) -> tuple[int, int, dict[str, float]]:
    """(FAILs, pairs, largest mean drop per gated metric seen between reseeded runs)."""
    runs = [_run("identity", seed, args, out) for seed in range(args.seeds)]
    fails = total = 0
    largest = {gate.metric: 0.0 for gate in DEFAULT_GATES}
    for a, b in itertools.permutations(runs, 2):
        same_seed = replace(b, permutations=a.permutations)
        verdict = evaluate_gate(a, same_seed, DEFAULT_GATES, alpha=args.alpha)
        fails += not verdict.passed
        total += 1
        for m in verdict.metrics:
            largest[m.spec.metric] = max(largest[m.spec.metric], m.drop)
    return fails, total, largest


def _demoted(ranking: tuple[str, ...], to: int) -> list[str]:
    """The ranking with its top document moved to 1-based rank ``to``."""
    rest = list(ranking[1:])
    rest.insert(to - 1, ranking[0])
    return rest


def power(args: argparse.Namespace, out: Path) -> list[dict[str, float]]:
    config = RunConfig(
        reranker="first-stage", dataset=args.dataset, perms=args.perms, depth=args.depth
    ).validate()
    prepared = prepare_run(replace(config, out=str(out / "first-stage-power")))
    base = baseline_from_results(execute_run(prepared), out)
    sets = {cset.query_id: cset for cset in prepared.dataset.sets}
    qrels = prepared.dataset.qrels
    ids = base.query_ids
    rng = np.random.default_rng(args.seed)
    rows = []
    for fraction in args.fractions:
        count = max(1, round(fraction * len(ids)))
        drops, test_fails, floor_fails, detects = [], 0, 0, []
        for _ in range(args.trials):
            hit = set(rng.choice(len(ids), size=count, replace=False).tolist())
            rankings = [
                (q, _demoted(docs, args.demote_to) if i in hit else list(docs))
                for i, (q, docs) in enumerate((q, sets[q].doc_ids) for q in ids)
            ]
            scores = effectiveness(qrels, rankings, metrics=(NDCG, MRR))
            per_query = dict(base.per_query)
            per_query[NDCG] = tuple(float(v) for v in scores[NDCG])
            per_query[MRR] = tuple(float(v) for v in scores[MRR])
            degraded = replace(base, per_query=per_query)
            verdict = evaluate_gate(base, degraded, DEFAULT_GATES, alpha=args.alpha)
            ndcg = next(m for m in verdict.metrics if m.spec.metric == NDCG)
            drops.append(ndcg.drop)
            test_fails += ndcg.significant
            floor_fails += ndcg.below_floor and not ndcg.significant
            detects.append(min(ndcg.detectable, ndcg.spec.floor))
        rows.append(
            {
                "queries demoted": count,
                "true drop": float(np.mean(drops)),
                "fails": (test_fails + floor_fails) / args.trials,
                "by test": test_fails / args.trials,
                "by floor only": floor_fails / args.trials,
                "said detectable": float(np.median(detects)),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="msmarco-dl19")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--perms", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=6, help="identity runs for false alarms")
    parser.add_argument("--trials", type=int, default=20, help="random subsets per size")
    parser.add_argument("--fractions", type=lambda s: [float(x) for x in s.split(",")],
                        default=[0.1, 0.2, 0.3, 0.5, 0.7, 1.0])  # fmt: skip
    parser.add_argument("--demote-to", type=int, default=20, help="1-based rank")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        fails, total, largest = false_alarms(args, out)
        rows = power(args, out)
    print(f"default gates: {', '.join(f'{g.metric}={g.margin:g}' for g in DEFAULT_GATES)}; "
          f"alpha {args.alpha}; depth {args.depth}, {args.perms} random orders")  # fmt: skip
    print(f"\nfalse alarms (identity, {args.seeds} seeds, every ordered pair): "
          f"{fails} of {total} ({fails / total:.1%}); largest mean drop seen: "
          + ", ".join(f"{k} {v:.4f}" for k, v in largest.items()))  # fmt: skip
    print(f"\npower: first-stage vs top document demoted to rank {args.demote_to}, "
          f"{args.trials} random query subsets per row (nDCG@10 drops in points)")  # fmt: skip
    print("| queries demoted | true drop | FAIL rate | by test | by floor only | said detectable |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['queries demoted']} | {100 * row['true drop']:.2f} | {row['fails']:.0%} | "
              f"{row['by test']:.0%} | {row['by floor only']:.0%} | "
              f"{100 * row['said detectable']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
