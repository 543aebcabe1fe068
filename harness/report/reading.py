"""Plain-language readings of a run's numbers, for readers who do not know the metrics.

``run_reading`` says in one sentence what a run's headline numbers mean ("the top item
differs in 54% of pairs of orders; 80% of candidate pairs come out in the order they were
shown"); ``too_few_queries_note`` says when a paired comparison cannot reach significance
whatever the data, because the exact sign-flip test's smallest p is 2 / 2**n.
"""

from __future__ import annotations

import math

from harness.metrics import registry
from harness.results.schema import RunResults


def run_reading(label: str, results: RunResults) -> str:
    """One sentence: how often the top item changes, how much the output follows the shown
    order, and whether reranking beat the first stage."""
    value = results.summary_value
    parts = []
    top1 = value(registry.TOP1_AGREEMENT)
    if not math.isnan(top1):
        parts.append(f"the top item differs in {_pct(1 - top1)} of pairs of orders")
    copy = value(registry.COPY_TAU)
    if not math.isnan(copy):
        # tau-b without ties is (C - D) / (C + D): the share of concordant pairs is (1 + tau)/2
        parts.append(
            f"{_pct((1 + copy) / 2)} of candidate pairs come out in the order they were shown "
            f"(50% = the shown order is ignored, 100% = copied)"
        )
    ndcg, first = value(registry.NDCG), value(registry.NDCG_FIRST_STAGE)
    if not (math.isnan(ndcg) or math.isnan(first)):
        change = ndcg - first
        verb = "raises" if change > 0 else "lowers" if change < 0 else "leaves"
        parts.append(
            f"reranking {verb} NDCG@{registry.TOP_K} from the first stage's {first:.3f} to "
            f"{ndcg:.3f}"
            if change
            else f"reranking leaves NDCG@{registry.TOP_K} at the first stage's {first:.3f}"
        )
    invalid = results.counts.get("invalid_orders", 0)
    if invalid:  # the numbers above leave them out (harness.validity)
        parts.append(
            f"{invalid} of {results.counts['samples']} orders "
            f"({_pct(invalid / results.counts['samples'])}) got an invalid answer and are left "
            "out of every other number"
        )
    if not parts:
        return f"{label}: no stability or effectiveness numbers to read."
    return f"{label}: {'; '.join(parts)}."


def smallest_sign_flip_p(n: int) -> float:
    """The smallest two-sided p an exact sign-flip test can give on n paired values."""
    return min(1.0, 2.0 / 2.0**n) if n > 0 else 1.0


def too_few_queries_note(n: int, rows: int, alpha: float = 0.05) -> str | None:
    """A sentence when no row of a comparison over ``n`` queries can be significant (its
    smallest p, times ``rows`` for Holm's first step, is not below ``alpha``); else None."""
    smallest = smallest_sign_flip_p(n)
    if smallest * max(rows, 1) < alpha:
        return None
    return (
        f"With {n} queries no difference can be significant: the smallest two-sided "
        f"sign-flip p is 2/2^{n} = {smallest:.3g} before Holm ({min(1.0, smallest * rows):.3g} "
        f"after, over {rows} rows), never below {alpha:g}. Add queries (--queries) to test "
        "a difference."
    )


def _pct(share: float) -> str:
    return f"{100 * share:.0f}%"
