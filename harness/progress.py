"""Progress where no progress bar can be drawn: one plain line now and then.

On a terminal the CLI draws a rich bar; elsewhere (CI logs, notebooks, ``nohup``, a pipe) a
bar is invisible or floods the log, so :class:`ProgressLines` writes a line such as::

    progress: invarirank on msmarco-dl19: 120/480 orders (25%), 3/12 queries, 0.84 orders/s,
    elapsed 2 min 23 s, eta 7 min 8 s

(one line) at most every ``every_s`` seconds or every ``every_fraction`` of the orders,
whichever comes first, and a last one when the work is done. The interval is configurable
(``HARNESS_PROGRESS_EVERY``: seconds; the fraction stays 10%).
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

EVERY_S = 30.0
EVERY_FRACTION = 0.1
EVERY_ENV = "HARNESS_PROGRESS_EVERY"
PREFIX = "progress: "


def every_seconds() -> float:
    """The line interval: ``HARNESS_PROGRESS_EVERY`` seconds when set (0: every update), else
    30 s. A value that is not a number is ignored rather than stopping a run."""
    value = os.environ.get(EVERY_ENV, "")
    try:
        return max(float(value), 0.0) if value.strip() else EVERY_S
    except ValueError:
        return EVERY_S


class ProgressLines:
    """Writes a progress line to ``stream`` when ``every_s`` seconds or ``every_fraction`` of
    the total passed since the last line, and when the work is done. Call it as the runner's
    progress callback: ``(done, total)`` orders, optionally ``queries=(done, total)``."""

    def __init__(
        self,
        label: str,
        stream: TextIO | None = None,
        every_s: float | None = None,
        every_fraction: float = EVERY_FRACTION,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_seconds() if every_s is None else every_s
        self.every_fraction = every_fraction
        self.clock = clock
        self._started: float | None = None
        self._start_done = 0  # orders already done (resumed) when this invocation began
        self._last_time = 0.0
        self._last_done = -1

    def __call__(self, done: int, total: int, queries: tuple[int, int] | None = None) -> None:
        now = self.clock()
        # Until an order is done (a resumed run starts above 0), the clock restarts at each
        # call: the runner calls once more when the model is loaded, so the rate and ETA are
        # the reranking's, not the load's.
        if self._started is None or done == self._start_done == self._last_done:
            self._started, self._start_done = now, done
            self._last_time, self._last_done = now, done
            return
        step = max(1, int(self.every_fraction * total)) if total else 1
        finished = total > 0 and done >= total
        due = now - self._last_time >= self.every_s or done - self._last_done >= step
        if done == self._last_done or not (due or finished):
            return
        self._last_time, self._last_done = now, done
        self.stream.write(self.line(done, total, now - self._started, queries) + "\n")
        self.stream.flush()

    def line(
        self, done: int, total: int, elapsed: float, queries: tuple[int, int] | None = None
    ) -> str:
        """One progress line; rate and ETA count only this invocation's orders."""
        percent = f" ({100 * done / total:.0f}%)" if total else ""
        parts = [f"{done}/{total} orders{percent}"]
        if queries is not None:
            parts.append(f"{queries[0]}/{queries[1]} queries")
        rate = (done - self._start_done) / elapsed if elapsed > 0 else 0.0
        parts.append(f"{rate:.3g} orders/s")
        parts.append(f"elapsed {duration(elapsed)}")
        if rate > 0 and total:
            parts.append(f"eta {duration((total - done) / rate)}")
        return f"{PREFIX}{self.label}: {', '.join(parts)}"


@dataclass(frozen=True)
class ProgressLine:
    """A progress line read back (tests, log scrapers)."""

    label: str
    done: int
    total: int
    queries_done: int | None
    queries_total: int | None
    rate: float
    eta: str | None


LINE = re.compile(
    r"^progress: (?P<label>.+?): (?P<done>\d+)/(?P<total>\d+) orders(?: \(\d+%\))?"
    r"(?:, (?P<qd>\d+)/(?P<qt>\d+) queries)?, (?P<rate>[\d.e+-]+) orders/s, "
    r"elapsed [^,]+(?:, eta (?P<eta>.+))?$"
)


def parse_line(text: str) -> ProgressLine | None:
    """The fields of a line :class:`ProgressLines` wrote, or None for any other line."""
    match = LINE.match(text.strip())
    if match is None:
        return None
    qd, qt = match["qd"], match["qt"]
    return ProgressLine(
        label=match["label"],
        done=int(match["done"]),
        total=int(match["total"]),
        queries_done=None if qd is None else int(qd),
        queries_total=None if qt is None else int(qt),
        rate=float(match["rate"]),
        eta=match["eta"],
    )


def duration(seconds: float) -> str:
    """``42 s``, ``12 min 5 s``, ``3 h 4 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
