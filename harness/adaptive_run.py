"""The runner's side of adaptive sampling: replay :mod:`harness.adaptive`'s rounds on a run's
samples, say which orders are due next, and record the rule and why each query stopped
(``adaptive.json`` in the run folder).

Row ``k`` (1-based) of a random plan is the design order ``random:k-1``; row 0 is the reference
and the ``--repeats`` rows follow the design: both are always shown, in round 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.adaptive import (
    PAIRWISE,
    Progress,
    QueryEstimate,
    Target,
    estimate,
    query_values,
    replay,
    stop_reasons,
)
from harness.data.compact import set_query_ids

if TYPE_CHECKING:
    from harness.permutations import OrderLabel
    from harness.prepare import PreparedRun
    from harness.results.store import SampleIndex

ADAPTIVE_FILE = "adaptive.json"


def target_of(prepared: PreparedRun) -> Target | None:
    """The run's adaptive target, or None for a fixed design."""
    config = prepared.config
    if config.target is None:
        return None
    return Target.parse(config.target, min_perms=config.min_perms, max_perms=config.perms)


def in_round(label: OrderLabel, limit: int | None) -> bool:
    """Whether a plan row is due when its query may show ``limit`` design orders."""
    return limit is None or label.family != "random" or (label.index or 0) < limit


class AdaptiveRounds:
    """The rule replayed on the samples of one run (``done`` grows as batches are saved)."""

    def __init__(self, prepared: PreparedRun, done: SampleIndex | None, target: Target) -> None:
        self._prepared = prepared
        self._done = done
        self.target = target
        self._ids = list(set_query_ids(prepared.dataset.sets))
        self._position = {q: k for k, q in enumerate(self._ids)}
        self._cache: dict[tuple[str, int], QueryEstimate] = {}

    def _estimate_of(self, query_id: str, n: int) -> QueryEstimate | None:
        if (query_id, n) in self._cache:
            return self._cache[(query_id, n)]
        if self._done is None:
            return None
        # an invalid answer's order is not a result: decisions wait for it to be asked again
        finished = self._done.done(query_id) - self._done.invalid_orders(query_id)
        if not all(row in finished for row in range(1, n + 1)):
            return None
        chosen = [
            s for s in self._done.query_samples(query_id)
            if s.label.family == "random" and (s.label.index or 0) < n
        ]  # fmt: skip
        chosen.sort(key=lambda s: s.label.index or 0)
        rankings = [s.ranking for s in chosen]
        shown = None
        if self.target.metric not in PAIRWISE:
            doc_ids = self._prepared.dataset.sets[self._position[query_id]].doc_ids
            shown = [[doc_ids[i] for i in s.shown] for s in chosen]
        found = estimate(query_values(self.target.metric, rankings, shown))
        self._cache[(query_id, n)] = found
        return found

    def progress(self) -> Progress:
        return replay(self._ids, self.target, self._estimate_of)

    def limits(self) -> dict[str, int]:
        """Design orders each query may show now (the current round's counts)."""
        return self.progress().counts

    def record(self) -> dict[str, Any]:
        """What ``adaptive.json`` holds: the rule, each round, and each query's orders and
        stopping reason (``pending`` when the rule has not finished)."""
        progress = self.progress()
        reasons = (
            stop_reasons(progress)
            if progress.final is not None
            else dict.fromkeys(progress.counts, "pending")
        )
        return {
            "rule": self.target.to_dict(),
            "finished": progress.final is not None,
            "stopped_because": progress.final.reason if progress.final else "pending",
            "rounds": [
                {
                    "estimate": r.estimate,
                    "half_width": r.half_width,
                    "orders": r.shown,
                }
                for r in progress.rounds
            ],
            "queries": {
                q: {"orders": progress.counts[q], "stopped": reasons[q]} for q in self._ids
            },
        }


def adaptive_rounds(prepared: PreparedRun, done: SampleIndex | None) -> AdaptiveRounds | None:
    target = target_of(prepared)
    return None if target is None else AdaptiveRounds(prepared, done, target)


def limits_of(rounds: AdaptiveRounds | None) -> dict[str, int] | None:
    return None if rounds is None else rounds.limits()
