"""Gate a new scorecard against a recorded one, task by task, with the run gate's statistics.

Each task's per-query vectors in the two scorecards are run baselines, so
:func:`harness.gates.gate.evaluate_gate` compares them exactly as ``harness gate`` compares a run
with its baseline (paired sign-flip and order-noise tests, Holm within the task, hard floors,
the invariance contract). The suite passes when every task the baseline scored passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.gates.gate import GateSpec, GateVerdict, evaluate_gate, render_verdict
from harness.suites.scorecard import Scorecard, check_same_suite


@dataclass(frozen=True)
class SuiteVerdict:
    tasks: dict[str, GateVerdict]

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.tasks.values())


def gate_scorecards(
    new: Scorecard,
    baseline: Scorecard,
    specs: Sequence[GateSpec],
    *,
    alpha: float = 0.05,
    seed: int = 0,
) -> SuiteVerdict:
    """Per task of the baseline: the run gate's verdict; a task the new card lacks fails."""
    check_same_suite([baseline, new])
    lacking = [t for t in baseline.tasks if t not in new.tasks]
    if lacking:
        raise HarnessError(
            f"{new.origin} has no result for task(s) {lacking} that {baseline.origin} scored; "
            "run them (bring their data) before gating"
        )
    return SuiteVerdict(
        {
            task: evaluate_gate(
                baseline.baseline(task), new.baseline(task), specs, alpha=alpha, seed=seed
            )
            for task in baseline.tasks
        }
    )


def render_suite_verdict(verdict: SuiteVerdict, new: Scorecard, baseline: Scorecard) -> str:
    parts = [
        render_verdict(v, run_label=f"{new.origin} [{task}]", baseline_label=baseline.origin)
        for task, v in verdict.tasks.items()
    ]
    failed = [task for task, v in verdict.tasks.items() if not v.passed]
    passed = len(verdict.tasks) - len(failed)
    why = f"; failed: {', '.join(failed)}" if failed else ""
    word = "PASS" if verdict.passed else "FAIL"
    summary = f"**suite: {word}** ({passed} of {len(verdict.tasks)} tasks pass{why})"
    return "\n".join([*parts, summary]) + "\n"
