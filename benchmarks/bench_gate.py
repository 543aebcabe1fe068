"""What the regression gate can see: its false-alarm rate and its power, measured on real data.

Two experiments on DL19 (43 judged queries, BM25 top-``depth``), with the default gates
(every default metric, Holm across them, alpha 0.05, margins and 3x floors from the registry):

* **False alarms.** The ``identity`` reranker (maximally order-sensitive) is run with
  ``--seeds`` different permutation seeds; every ordered pair of runs is gated against each
  other. Both are the same reranker on independent samples of orders, so every FAIL is a
  false alarm. (The gate itself refuses runs of different seeds as not comparable; here the
  recorded seed is equalised on purpose, to measure the statistics alone.)
* **Power, spread out.** ``first-stage`` is the baseline; a degraded reranker demotes the top
  document of a seeded random subset of queries to rank ``--demote-to``. For several subset
  sizes it reports the true mean nDCG@10 drop, how often the gate fails it over ``--trials``
  subsets (by the sign-flip test, by the order-noise test alone, by the floor alone) and the
  drop the verdict says it can detect.
* **Power, concentrated.** ``--hit`` random queries (5 of DL19's 43) each lose the same share
  of their nDCG@10, together ``--concentrated`` points of the mean (3 = the default floor,
  which a mean drop must exceed to fail it). Against the ``first-stage`` baseline (no order
  noise) and against ``identity`` (the most order noise): a random pair of its reseeded runs,
  the second one degraded, so the drop comes on top of the order noise between them.

Usage::

    .venv/bin/python benchmarks/bench_gate.py
    .venv/bin/python benchmarks/bench_gate.py --seeds 6 --trials 20 --depth 20 --concentrated 2,3

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
from harness.gates.gate import DEFAULT_GATES, MetricVerdict, evaluate_gate
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


def _tally(verdicts: list[MetricVerdict], alpha: float) -> dict[str, float]:
    """Share of verdicts failed, and by what: the sign-flip test, else another test (the
    order-noise test, where the gate has one), else the floor alone."""
    sign_flip = [m.p_holm < alpha for m in verdicts]
    other = [m.significant and not s for m, s in zip(verdicts, sign_flip, strict=True)]
    floor = [m.below_floor and not m.significant for m in verdicts]
    return {
        "true drop": float(np.mean([m.drop for m in verdicts])),
        "over margin": float(np.mean([m.drop > m.spec.margin + 1e-12 for m in verdicts])),
        "fails": float(np.mean([not m.passed for m in verdicts])),
        "by sign-flip": float(np.mean(sign_flip)),
        "by order-noise only": float(np.mean(other)),
        "by floor only": float(np.mean(floor)),
        "sign-flip p (Holm)": float(np.median([m.p_holm for m in verdicts])),
        "said detectable": float(np.median([min(m.detectable, m.spec.floor) for m in verdicts])),
    }


def _gate_ndcg(base: Baseline, new: Baseline, alpha: float) -> MetricVerdict:
    verdict = evaluate_gate(base, new, DEFAULT_GATES, alpha=alpha)
    return next(m for m in verdict.metrics if m.spec.metric == NDCG)


def false_alarms(
    args: argparse.Namespace, runs: list[Baseline]
) -> tuple[list[dict[str, bool]], dict[str, float]]:
    """Per ordered pair of reseeded runs, what failed; the largest mean drop per metric."""
    pairs = []
    largest = {gate.metric: 0.0 for gate in DEFAULT_GATES}
    for a, b in itertools.permutations(runs, 2):
        same_seed = replace(b, permutations=a.permutations)
        verdict = evaluate_gate(a, same_seed, DEFAULT_GATES, alpha=args.alpha)
        pairs.append(
            {
                "fail": not verdict.passed,
                "sign-flip": any(m.p_holm < args.alpha for m in verdict.metrics),
                "other test": any(
                    m.significant and not m.p_holm < args.alpha for m in verdict.metrics
                ),
                "floor": any(m.below_floor for m in verdict.metrics),
            }
        )
        for m in verdict.metrics:
            largest[m.spec.metric] = max(largest[m.spec.metric], m.drop)
    return pairs, largest


def _demoted(ranking: tuple[str, ...], to: int) -> list[str]:
    """The ranking with its top document moved to 1-based rank ``to``."""
    rest = list(ranking[1:])
    rest.insert(to - 1, ranking[0])
    return rest


def power(args: argparse.Namespace, out: Path) -> tuple[Baseline, list[dict[str, float]]]:
    """The first-stage baseline, and one row per subset size of queries demoted."""
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
        verdicts = []
        for _ in range(args.trials):
            hit = set(rng.choice(len(ids), size=count, replace=False).tolist())
            rankings = [
                (q, _demoted(docs, args.demote_to) if i in hit else list(docs))
                for i, (q, docs) in enumerate((q, sets[q].doc_ids) for q in ids)
            ]
            # MRR at the run's relevance level (DL19's card: 2), as the baseline's was
            scores = effectiveness(
                qrels, rankings, metrics=(NDCG, MRR), relevance_level=base.relevance_level
            )
            per_query = dict(base.per_query)
            per_query[NDCG] = tuple(float(v) for v in scores[NDCG])
            per_query[MRR] = tuple(float(v) for v in scores[MRR])
            verdicts.append(_gate_ndcg(base, replace(base, per_query=per_query), args.alpha))
        rows.append({"queries": count, **_tally(verdicts, args.alpha)})
    return base, rows


def _concentrated_drop(
    run: Baseline, points: float, hit: int, rng: np.random.Generator
) -> Baseline:
    """``run`` with ``hit`` random queries each losing the same share of their nDCG@10, so
    the mean falls by ``points`` / 100; only queries that can lose their share are drawn."""
    values = np.array(run.per_query[NDCG])
    total = points / 100 * len(values)
    eligible = np.flatnonzero(values >= total / hit)
    chosen = rng.choice(eligible, size=hit, replace=False)
    lowered = values.copy()
    lowered[chosen] *= 1 - total / values[chosen].sum()
    return replace(run, per_query={**run.per_query, NDCG: tuple(float(v) for v in lowered)})


def concentrated(
    args: argparse.Namespace, first_stage: Baseline, identity: list[Baseline]
) -> list[dict[str, float]]:
    """Concentrated drops against a baseline without order noise and one with the most."""
    rng = np.random.default_rng(args.seed + 1)
    pairs = list(itertools.permutations(identity, 2))
    rows = []
    for points in args.concentrated:
        for name in ("first-stage", "identity"):
            verdicts = []
            for _ in range(args.trials):
                if name == "first-stage":
                    base, new = first_stage, first_stage
                else:
                    base, new = pairs[rng.integers(len(pairs))]
                    new = replace(new, permutations=base.permutations)
                degraded = _concentrated_drop(new, points, args.hit, rng)
                verdicts.append(_gate_ndcg(base, degraded, args.alpha))
            rows.append({"baseline": name, "points": points, **_tally(verdicts, args.alpha)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="msmarco-dl19")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--perms", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=6, help="identity runs for false alarms")
    parser.add_argument("--trials", type=int, default=20, help="random subsets per size")
    parser.add_argument("--fractions", type=_floats, default=[0.1, 0.2, 0.3, 0.5, 0.7, 1.0])
    parser.add_argument("--demote-to", type=int, default=20, help="1-based rank")
    parser.add_argument(
        "--concentrated",
        type=_floats,
        default=[2.0, 3.0],
        help="mean nDCG@10 drops (points) confined to --hit queries",
    )
    parser.add_argument("--hit", type=int, default=5, help="queries a concentrated drop hits")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        identity = [_run("identity", seed, args, out) for seed in range(args.seeds)]
        pairs, largest = false_alarms(args, identity)
        first_stage, rows = power(args, out)
        focused = concentrated(args, first_stage, identity)
    print(f"default gates: {', '.join(f'{g.metric}={g.margin:g}' for g in DEFAULT_GATES)}; "
          f"alpha {args.alpha}; depth {args.depth}, {args.perms} random orders")  # fmt: skip
    fails = sum(p["fail"] for p in pairs)
    print(f"\nfalse alarms (identity, {args.seeds} seeds, every ordered pair): "
          f"{fails} of {len(pairs)} ({fails / len(pairs):.1%}; by the sign-flip test "
          f"{sum(p['sign-flip'] for p in pairs)}, by the order-noise test "
          f"{sum(p['other test'] for p in pairs)}, by a floor {sum(p['floor'] for p in pairs)}); "
          "largest mean drop seen: "
          + ", ".join(f"{k} {v:.4f}" for k, v in largest.items()))  # fmt: skip
    print(f"\npower: first-stage vs top document demoted to rank {args.demote_to}, "
          f"{args.trials} random query subsets per row (nDCG@10 drops in points)")  # fmt: skip
    head = "drop > margin | FAIL rate | by sign-flip | by order-noise only | by floor only"
    print(f"| queries demoted | true drop | {head} | said detectable |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['queries']} | {100 * row['true drop']:.2f} | {_rates(row)} | "
              f"{100 * row['said detectable']:.2f} |")  # fmt: skip
    print(f"\nconcentrated: {args.hit} random queries of {len(first_stage.query_ids)} lose the "
          f"same share of their nDCG@10, {args.trials} trials per row")  # fmt: skip
    print(f"| baseline | drop made | observed drop | {head} | sign-flip p (Holm), median "
          "| said detectable |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in focused:
        print(f"| {row['baseline']} | {row['points']:g} | {100 * row['true drop']:.2f} | "
              f"{_rates(row)} | {row['sign-flip p (Holm)']:.3f} | "
              f"{100 * row['said detectable']:.2f} |")  # fmt: skip


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def _rates(row: dict[str, float]) -> str:
    keys = ("over margin", "fails", "by sign-flip", "by order-noise only", "by floor only")
    return " | ".join(f"{row[k]:.0%}" for k in keys)


if __name__ == "__main__":
    main()
