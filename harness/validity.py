"""Invalid answers: what they are, how they are marked, counted, bounded and gated.

An answer is *invalid* when it carries nothing the method can read, after the backend asked
again ``invalid_retries`` times: a server's completion without the log-probs FIRST and
pointwise read, without the text RankGPT parses, or answered by another model. It is
recorded, never cached: the call's record says why (``invalid``), the method ranks that
window by its fallback (every identifier ``-inf``, ties by doc id; an empty answer, the
window as shown), and the order's facts count it (``invalid_answers``).

What an invalid order contributes: nothing but its count. Its ranking is the harness's
fallback, not the model's, so it is left out of every effectiveness, stability and
position-bias value (a doc-id fallback would read as perfect stability, a shown-order
fallback as perfect order dependence); the run's *invalid share* (invalid orders / orders)
is reported beside them as a validity metric, and a rerun of the same command asks the
invalid orders again (a fixed server then fills them in).

A model's own answer that the parser must repair (RankGPT's ``wrong_format``) is not
invalid: it is what the model said for that order, and order-dependent parse failures are
part of what the harness measures (``parse_repair_rate``, the parse table). Local backends
compute every log-prob they are asked for; FIRST's identifier log-probs that are NaN
(overflowed logits) are the one local answer that is invalid. Pointwise scores a set once
for all its orders, and CapCal calibrates a query's windows with one content-free answer:
one invalid answer there makes every order it serves invalid.

Bounded: a run stops, in one line and keeping every finished order, as soon as more than
``max_invalid_share`` of its orders are invalid (decided, not guessed: the count already
exceeds that share of the run's total). Gated: the gate fails a run whose invalid share
rises above the baseline's by more than :data:`GATE_MARGIN`, and a baseline with none
allows none.

Cheap to import (no numpy): the store and the CLI read it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.errors import HarnessError

INVALID_ANSWERS = "invalid_answers"
"""``CallFacts.extra`` key: how many answers behind one order stayed invalid; absent if none."""
INVALID_ANSWER = "invalid_answer"
"""``CallFacts.extra`` key: why the order's first invalid answer was invalid (one line)."""

DEFAULT_MAX_INVALID_SHARE = 0.05
"""Share of a run's orders that may be invalid before the run is refused: a few glitches of a
replica pass (and are reported), a server that returns no log-probs stops the run early."""

GATE_MARGIN = 0.01
"""How far the invalid share may rise over a non-zero baseline's before the gate fails (a
point: a glitching replica varies run to run); over a baseline with no invalid order, none."""


def invalid_facts(calls: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``extra`` entries that mark an order invalid, from the call records behind it
    (a backend's ``calls``; an invalid one carries ``invalid``: why); empty when all valid."""
    problems = [str(c["invalid"]) for c in calls if c.get("invalid")]
    return {INVALID_ANSWERS: len(problems), INVALID_ANSWER: problems[0]} if problems else {}


def invalid_answers(facts: Mapping[str, Any]) -> int:
    """How many answers behind an order (its sample's ``facts``) were invalid; 0 for samples
    recorded before invalid answers were recorded (such runs refused them)."""
    extra = facts.get("extra") or {}
    return int(extra.get(INVALID_ANSWERS) or 0)


def check_max_invalid_share(value: float) -> float:
    """``--max-invalid-share`` is a share: 0 refuses any invalid order, 1 never refuses."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise HarnessError(f"--max-invalid-share must be between 0 and 1, got {value!r}")
    return float(value)


def too_many_invalid(invalid: int, total: int, max_share: float) -> bool:
    """Whether ``invalid`` orders already make the run's share exceed ``max_share``, whatever
    the rest of its ``total`` orders give."""
    return invalid > max_share * total


def refusal(invalid: int, total: int, max_share: float, first: str, where: str) -> str:
    """The one line that stops a run with too many invalid orders."""
    return (
        f"{invalid} of {total} orders got invalid answers, more than --max-invalid-share "
        f"{max_share:g} allows (first: {where}: {first}); the valid orders are kept, rerun to "
        "ask the invalid ones again"
    )


def gate_allows(baseline_share: float, new_share: float) -> bool:
    """The gate's rule: no invalid order over a baseline with none; otherwise at most
    :data:`GATE_MARGIN` above the baseline's share (a fall always passes)."""
    if baseline_share == 0:
        return new_share == 0
    return new_share <= baseline_share + GATE_MARGIN + 1e-12
