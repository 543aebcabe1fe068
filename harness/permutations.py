"""Seeded permutation plans: the orders in which one candidate set is shown.

A plan is an integer array ``orders`` of shape ``[P, n]`` (row ``p`` lists candidate indices
in shown order, index 0 = first-stage best) with one typed :class:`OrderLabel` per row. Row 0
is always the identity (first-stage) order. Strategies whose design includes it (identity,
cyclic, sweep, exhaustive) label it ``identity``; the others (random, reversed) get it
prepended as an extra ``reference`` row, which metrics keep apart from the strategy's own
orders.

Random orders are seeded per query from sha256(seed, query id) so a query's orders do not
depend on which other queries are in the run, on their order, or on Python's salted
``hash``. The shuffled completions of ``fixed``, ``sweep`` (with ``count`` > 1) and
``templates`` draw from their own stream, sha256(seed, query id, design tag) — e.g. the tag
``fixed:3@0`` — so asking for more completions extends a stream without changing the
earlier ones, and no design's draws depend on another's.

``repeats`` appends R more identity rows labelled ``repeat:1`` .. ``repeat:R`` to any plan:
the noise floor (the spread of outputs under NO change of order). Like the reference row,
they stay outside the design's metrics.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from harness.errors import HarnessError

MAX_EXHAUSTIVE_N = 8
STRATEGIES = (
    "random", "identity", "reversed", "cyclic", "sweep", "exhaustive", "fixed", "templates",
)  # fmt: skip
# "reference": the identity order added in front of strategies that do not produce it;
# "repeat": the identity order shown again for the noise floor (``repeats``).
OrderFamily = Literal[
    "reference", "identity", "random", "reversed", "cyclic", "sweep", "exhaustive", "fixed",
    "template", "repeat",
]  # fmt: skip
_FAMILIES = frozenset(
    ("reference", "identity", "random", "reversed", "cyclic", "sweep", "exhaustive", "fixed",
     "template", "repeat")
)  # fmt: skip
_INDEXED = frozenset(("random", "cyclic", "exhaustive", "template", "repeat"))
_PINNED = frozenset(("sweep", "fixed"))
_DRAWN = frozenset(("fixed", "template"))  # always carry a completion number
_LABEL_RE = re.compile(r"([a-z]+)(?::(?:(\d+)@(\d+)|(\d+)))?(?:#(\d+))?")


@functools.total_ordering
@dataclass(frozen=True)
class OrderLabel:
    """Which order of a plan a row is: its family and that family's parameters.

    ``index`` numbers the orders of ``random`` (0-based draw), ``cyclic`` (the shift),
    ``exhaustive`` (the permutation's index in lexicographic order), ``template`` (the
    template's 0-based number in its file) and ``repeat`` (1..R); ``sweep`` and ``fixed``
    orders put candidate ``item`` (first-stage index) at input ``position``. ``draw``
    numbers the seeded completions of a ``fixed`` pin or a template (from 0), and the
    shuffled extra completions of a sweep position (from 1; the sweep's first completion
    keeps the other candidates in first-stage order and has no draw). ``str()`` gives the
    compact text form stored in run files (``random:3``, ``sweep:3@5``, ``sweep:3@5#2``,
    ``fixed:0@19#4``, ``template:2#0``, ``repeat:1``, ``reference``), which :meth:`parse`
    reads back.
    """

    family: OrderFamily
    index: int | None = None
    item: int | None = None
    position: int | None = None
    draw: int | None = None

    def __post_init__(self) -> None:
        if self.family not in _FAMILIES:
            raise ValueError(f"unknown order family {self.family!r}")
        indexed = self.family in _INDEXED
        pinned = self.family in _PINNED
        drawn_ok = self.draw is not None if self.family in _DRAWN else (
            self.draw is None or (self.family == "sweep" and self.draw >= 1)
        )  # fmt: skip
        if (
            (self.index is not None) != indexed
            or (self.item is not None, self.position is not None) != (pinned, pinned)
            or not drawn_ok
            or (self.family == "repeat" and (self.index or 0) < 1)
        ):
            raise ValueError(f"bad parameters for a {self.family!r} order: {self!r}")

    def _key(self) -> tuple:
        fields = (self.index, self.item, self.position, self.draw)
        return tuple(-1 if v is None else v for v in fields)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, OrderLabel):
            return NotImplemented
        return (self.family, self._key()) < (other.family, other._key())

    @property
    def is_reference(self) -> bool:
        """The identity order added only as a reference, outside the strategy's design."""
        return self.family == "reference"

    @property
    def is_repeat(self) -> bool:
        """A rerun of the identity order for the noise floor, outside the design."""
        return self.family == "repeat"

    @property
    def in_design(self) -> bool:
        """Whether the strategy's metrics count this order (not a reference, not a repeat)."""
        return not (self.is_reference or self.is_repeat)

    def __str__(self) -> str:
        if self.item is not None:
            text = f"{self.family}:{self.item}@{self.position}"
        elif self.index is not None:
            text = f"{self.family}:{self.index}"
        else:
            text = self.family
        return text if self.draw is None else f"{text}#{self.draw}"

    @classmethod
    def parse(cls, text: str) -> OrderLabel:
        """Read the text form back; ValueError on anything else."""
        match = _LABEL_RE.fullmatch(text)
        try:
            if match is None:
                raise ValueError
            family, item, position, index, draw = match.groups()
            return cls(
                family,  # type: ignore[arg-type]
                index=None if index is None else int(index),
                item=None if item is None else int(item),
                position=None if position is None else int(position),
                draw=None if draw is None else int(draw),
            )
        except (ValueError, TypeError):
            raise ValueError(f"not an order label: {text!r}") from None


REFERENCE = OrderLabel("reference")
IDENTITY = OrderLabel("identity")
RELEVANT = "relevant"
"""``Pin.item`` value meaning "the query's best-placed judged-relevant candidate"."""


@dataclass(frozen=True)
class PermutationPlan:
    """The orders to show for one query; row 0 is the identity order."""

    query_id: str
    orders: np.ndarray  # [P, n] int64
    labels: tuple[OrderLabel, ...]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Pin:
    """What ``fixed`` pins: candidate ``item`` (a first-stage index, or ``relevant`` for the
    query's first judged-relevant candidate) at input ``position`` (negative counts from the
    end: -1 is the last position)."""

    item: int | str
    position: int

    def __str__(self) -> str:
        return f"{self.item}@{self.position}"

    @classmethod
    def parse(cls, text: str) -> Pin:
        """``ITEM@POS`` (``relevant@0``, ``3@-1``); a one-line HarnessError otherwise."""
        item, at, position = str(text).partition("@")
        try:
            if not at:
                raise ValueError
            pin_item: int | str = item if item == RELEVANT else int(item)
            pin = cls(pin_item, int(position))
        except ValueError:
            raise HarnessError(
                f"--pin must be ITEM@POSITION (ITEM a first-stage index or 'relevant', "
                f"POSITION an input position, -1 = last), got {text!r}"
            ) from None
        if isinstance(pin.item, int) and pin.item < 0:
            raise HarnessError(f"--pin item must be a first-stage index >= 0, got {text!r}")
        return pin

    def resolve(self, query_id: str, n: int, relevant: Sequence[int]) -> tuple[int, int]:
        """(item, position) for a query of ``n`` candidates; HarnessError if out of range."""
        if self.item == RELEVANT:
            if not relevant:
                raise HarnessError(
                    f"--pin {self}: query {query_id!r} has no candidate judged at or above the "
                    "run's relevance level to pin (see --relevance-level)"
                )
            item = min(relevant)
        else:
            item = int(self.item)
        position = self.position + n if self.position < 0 else self.position
        if not (0 <= item < n and 0 <= position < n):
            raise HarnessError(
                f"--pin {self}: query {query_id!r} has {n} candidates (item and position must "
                f"be in 0..{n - 1})"
            )
        return item, position


@dataclass(frozen=True)
class Template:
    """One order of a templates file: ``slots[p]`` is the first-stage index shown at input
    position p, or None (filled by a seeded shuffle of the candidates no slot names).
    Positions past the template's length are free too. ``source`` is ``file:line``."""

    slots: tuple[int | None, ...]
    source: str

    def check(self, query_id: str, n: int) -> None:
        if len(self.slots) > n:
            raise HarnessError(
                f"{self.source}: template has {len(self.slots)} positions but query "
                f"{query_id!r} has {n} candidates"
            )
        named = [s for s in self.slots if s is not None]
        if named and max(named) >= n:
            raise HarnessError(
                f"{self.source}: candidate {max(named)} is out of range for query {query_id!r} "
                f"({n} candidates, indices 0..{n - 1})"
            )


def read_templates(path: Path) -> tuple[Template, ...]:
    """Read a templates file: one JSON array per line, each entry a first-stage candidate
    index (0 = first-stage best) or null; blank lines and lines starting with ``#`` are
    skipped. A malformed line is a one-line HarnessError naming the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"cannot read templates file {path}: {exc}") from exc
    templates = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(value, list) or not value:
            raise HarnessError(
                f"{where}: a template must be a non-empty JSON array of candidate indices "
                f"or null, got {stripped[:40]!r}"
            )
        for entry in value:
            if entry is not None and (not isinstance(entry, int) or isinstance(entry, bool)):
                raise HarnessError(
                    f"{where}: entries must be candidate indices (integers) or null, got {entry!r}"
                )
            if entry is not None and entry < 0:
                raise HarnessError(f"{where}: candidate index {entry} is negative")
        named = [e for e in value if e is not None]
        repeated = sorted({e for e in named if named.count(e) > 1})
        if repeated:
            raise HarnessError(f"{where}: candidate {repeated[0]} appears more than once")
        templates.append(Template(tuple(value), where))
    if not templates:
        raise HarnessError(f"templates file {path} holds no templates")
    return tuple(templates)


@dataclass(frozen=True)
class _Request:
    """What a builder needs for one query."""

    query_id: str
    n: int
    perms: int
    seed: int
    relevant: tuple[int, ...]
    count: int | None
    pin: Pin | None
    templates: tuple[Template, ...]


def query_rng(seed: int, query_id: str) -> np.random.Generator:
    """A generator seeded from sha256 of (seed, query id): stable across processes and runs."""
    digest = hashlib.sha256(f"{seed}\x1f{query_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def design_rng(seed: int, query_id: str, tag: str) -> np.random.Generator:
    """The stream of one design element (``tag``, e.g. ``fixed:3@0``) of one query."""
    return query_rng(seed, f"{query_id}\x1f{tag}")


def plan_permutations(
    strategy: str,
    query_id: str,
    n: int,
    *,
    perms: int,
    seed: int,
    relevant_positions: Sequence[int] = (),
    count: int | None = None,
    pin: Pin | None = None,
    templates: Sequence[Template] = (),
    repeats: int = 0,
) -> PermutationPlan:
    """Build the plan for one query of ``n`` candidates.

    ``perms`` is the number of random orders (strategy ``random`` only). ``relevant_positions``
    are the first-stage positions of judged-relevant candidates, moved by ``sweep``.
    ``count``: completions per pinned position (``fixed``, default 20; ``sweep``, default 1
    = the others in first-stage order) or per partial template (``templates``, default 1).
    ``pin``: what ``fixed`` pins (default ``relevant@0``). ``templates``: the orders of
    ``templates``. ``repeats``: identity rows appended for the noise floor.
    """
    if n < 1:
        raise HarnessError(f"query {query_id!r} has no candidates to permute")
    builder = _BUILDERS.get(strategy)
    if builder is None:
        raise HarnessError(f"unknown permutation strategy {strategy!r}; choose from {STRATEGIES}")
    if count is not None and count < 1:
        raise HarnessError(f"--count must be at least 1, got {count}")
    if repeats < 0:
        raise HarnessError(f"--repeats must be at least 0, got {repeats}")
    request = _Request(
        query_id, n, perms, seed, tuple(relevant_positions), count, pin, tuple(templates)
    )
    planned = _planned_rows(strategy, request) + repeats
    if planned > MAX_PLAN_ROWS:
        raise HarnessError(
            f"query {query_id!r}: strategy {strategy} would show {planned:,} orders "
            f"(limit {MAX_PLAN_ROWS:,} per query); lower --count, --depth or --repeats"
        )
    orders, labels = builder(request)
    if labels[0] != IDENTITY:
        orders = [np.arange(n), *orders]
        labels = [REFERENCE, *labels]
    orders = [*orders, *(np.arange(n) for _ in range(repeats))]
    labels = [*labels, *(OrderLabel("repeat", index=r) for r in range(1, repeats + 1))]
    return PermutationPlan(query_id, np.asarray(orders, dtype=np.int64), tuple(labels))


MAX_PLAN_ROWS = 50_000
"""Orders one query may ask for, counted before any is built: ``sweep --count 10000`` at depth
100 would otherwise allocate until memory runs out."""


def _planned_rows(strategy: str, req: _Request) -> int:
    """How many orders a design will build (an upper bound where it depends on the data)."""
    if strategy == "sweep":
        return 1 + len(req.relevant) * req.n * (req.count or 1)
    if strategy == "templates":
        return 1 + len(req.templates) * (req.count or 1)
    return 0  # random, fixed (bounded by --perms, --count), cyclic (n), exhaustive (n <= 8)


def _random(req: _Request):
    if req.perms < 1:
        raise HarnessError(f"--perms must be at least 1 for the random strategy, got {req.perms}")
    rng = query_rng(req.seed, req.query_id)
    orders = [rng.permutation(req.n) for _ in range(req.perms)]
    return orders, [OrderLabel("random", index=i) for i in range(req.perms)]


def _identity(req: _Request):
    return [np.arange(req.n)], [IDENTITY]


def _reversed(req: _Request):
    return [np.arange(req.n)[::-1]], [OrderLabel("reversed")]


def _cyclic(req: _Request):
    # Shift s shows candidate i at position (i + s) mod n: a Latin square, so every
    # candidate visits every position exactly once across the n shifts.
    base = np.arange(req.n)
    orders = [np.roll(base, shift) for shift in range(req.n)]
    return orders, [IDENTITY, *(OrderLabel("cyclic", index=s) for s in range(1, req.n))]


def _pinned(rng: np.random.Generator, n: int, item: int, position: int) -> np.ndarray:
    """``item`` at ``position``, the other candidates in a seeded random order."""
    others = np.array([i for i in range(n) if i != item], dtype=np.int64)
    others = others[rng.permutation(len(others))]
    return np.insert(others, position, item)


def _sweep(req: _Request):
    # Each judged-relevant candidate is moved through every position with the others kept in
    # first-stage order: the lost-in-the-middle curve. The identity row is shared. With
    # count C > 1, each (item, position) also gets C - 1 completions with the others shuffled.
    n = req.n
    extra = (req.count or 1) - 1
    orders, labels = [np.arange(n)], [IDENTITY]
    for item in req.relevant:
        others = [i for i in range(n) if i != item]
        for pos in range(n):
            if pos != item:  # that order is the identity
                orders.append(np.array([*others[:pos], item, *others[pos:]]))
                labels.append(OrderLabel("sweep", item=item, position=pos))
            if extra:
                rng = design_rng(req.seed, req.query_id, f"sweep:{item}@{pos}")
                for draw in range(1, extra + 1):
                    orders.append(_pinned(rng, n, item, pos))
                    labels.append(OrderLabel("sweep", item=item, position=pos, draw=draw))
    return orders, labels


def _fixed(req: _Request):
    item, position = (req.pin or Pin(RELEVANT, 0)).resolve(req.query_id, req.n, req.relevant)
    count = req.count or 20
    rng = design_rng(req.seed, req.query_id, f"fixed:{item}@{position}")
    orders = [_pinned(rng, req.n, item, position) for _ in range(count)]
    labels = [OrderLabel("fixed", item=item, position=position, draw=d) for d in range(count)]
    return orders, labels


def _templates(req: _Request):
    if not req.templates:
        raise HarnessError("the templates strategy needs --templates FILE")
    n = req.n
    orders, labels = [], []
    for number, template in enumerate(req.templates):
        template.check(req.query_id, n)
        slots = list(template.slots) + [None] * (n - len(template.slots))
        free = np.array(sorted(set(range(n)) - {s for s in slots if s is not None}))
        draws = 1 if not free.size else req.count or 1
        rng = design_rng(req.seed, req.query_id, f"template:{number}")
        for draw in range(draws):
            filling = iter(free[rng.permutation(free.size)].tolist())
            orders.append(np.array([s if s is not None else next(filling) for s in slots]))
            labels.append(OrderLabel("template", index=number, draw=draw))
    return orders, labels


def _exhaustive(req: _Request):
    n = req.n
    if n > MAX_EXHAUSTIVE_N:
        raise HarnessError(
            f"exhaustive strategy refused for query {req.query_id!r}: {n} candidates would need "
            f"{math.factorial(n):,} orders (limit n <= {MAX_EXHAUSTIVE_N}; use --depth)"
        )
    orders = [np.array(p) for p in itertools.permutations(range(n))]
    labels = [IDENTITY, *(OrderLabel("exhaustive", index=i) for i in range(1, len(orders)))]
    return orders, labels


_BUILDERS: dict[str, Callable[[_Request], tuple[list[np.ndarray], list[OrderLabel]]]] = {
    "random": _random,
    "identity": _identity,
    "reversed": _reversed,
    "cyclic": _cyclic,
    "sweep": _sweep,
    "exhaustive": _exhaustive,
    "fixed": _fixed,
    "templates": _templates,
}
