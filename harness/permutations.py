"""Seeded permutation plans: the orders in which one candidate set is shown.

A plan is an integer array ``orders`` of shape ``[P, n]`` (row ``p`` lists candidate indices
in shown order, index 0 = first-stage best) with one typed :class:`OrderLabel` per row. Row 0
is always the identity (first-stage) order. Strategies whose design includes it (identity,
cyclic, sweep, exhaustive) label it ``identity``; the others (random, reversed) get it
prepended as an extra ``reference`` row, which metrics keep apart from the strategy's own
orders.

Random orders are seeded per query from sha256(seed, query id) so a query's orders do not
depend on which other queries are in the run, on their order, or on Python's salted
``hash``.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from harness.errors import HarnessError

MAX_EXHAUSTIVE_N = 8
STRATEGIES = ("random", "identity", "reversed", "cyclic", "sweep", "exhaustive")
# "reference": the identity order added in front of strategies that do not produce it.
OrderFamily = Literal[
    "reference", "identity", "random", "reversed", "cyclic", "sweep", "exhaustive"
]
_FAMILIES = frozenset(("reference", *STRATEGIES))
_INDEXED = frozenset(("random", "cyclic", "exhaustive"))


@dataclass(frozen=True, order=True)
class OrderLabel:
    """Which order of a plan a row is: its family and that family's parameters.

    ``index`` numbers the orders of ``random`` (0-based draw), ``cyclic`` (the shift) and
    ``exhaustive`` (the permutation's index in lexicographic order); ``sweep`` orders move
    candidate ``item`` (first-stage index) to input ``position``. ``str()`` gives the compact
    text form stored in run files (``random:3``, ``sweep:3@5``, ``reference``), which
    :meth:`parse` reads back.
    """

    family: OrderFamily
    index: int | None = None
    item: int | None = None
    position: int | None = None

    def __post_init__(self) -> None:
        if self.family not in _FAMILIES:
            raise ValueError(f"unknown order family {self.family!r}")
        indexed = self.family in _INDEXED
        swept = self.family == "sweep"
        if (self.index is not None) != indexed or (
            (self.item is not None, self.position is not None) != (swept, swept)
        ):
            raise ValueError(f"bad parameters for a {self.family!r} order: {self!r}")

    @property
    def is_reference(self) -> bool:
        """The identity order added only as a reference, outside the strategy's design."""
        return self.family == "reference"

    def __str__(self) -> str:
        if self.family == "sweep":
            return f"sweep:{self.item}@{self.position}"
        if self.index is not None:
            return f"{self.family}:{self.index}"
        return self.family

    @classmethod
    def parse(cls, text: str) -> OrderLabel:
        """Read the text form back; ValueError on anything else."""
        family, sep, rest = text.partition(":")
        try:
            if family == "sweep" and sep:
                item, at, position = rest.partition("@")
                if not at:
                    raise ValueError
                return cls("sweep", item=int(item), position=int(position))
            if sep:
                return cls(family, index=int(rest))  # type: ignore[arg-type]
            return cls(family)  # type: ignore[arg-type]
        except (ValueError, TypeError):
            raise ValueError(f"not an order label: {text!r}") from None


REFERENCE = OrderLabel("reference")
IDENTITY = OrderLabel("identity")


@dataclass(frozen=True)
class PermutationPlan:
    """The orders to show for one query; row 0 is the identity order."""

    query_id: str
    orders: np.ndarray  # [P, n] int64
    labels: tuple[OrderLabel, ...]

    def __len__(self) -> int:
        return len(self.labels)


def query_rng(seed: int, query_id: str) -> np.random.Generator:
    """A generator seeded from sha256 of (seed, query id): stable across processes and runs."""
    digest = hashlib.sha256(f"{seed}\x1f{query_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def plan_permutations(
    strategy: str,
    query_id: str,
    n: int,
    *,
    perms: int,
    seed: int,
    relevant_positions: Sequence[int] = (),
) -> PermutationPlan:
    """Build the plan for one query of ``n`` candidates.

    ``perms`` is the number of random orders (strategy ``random`` only). ``relevant_positions``
    are the first-stage positions of judged-relevant candidates, moved by ``sweep``.
    """
    if n < 1:
        raise HarnessError(f"query {query_id!r} has no candidates to permute")
    builder = _BUILDERS.get(strategy)
    if builder is None:
        raise HarnessError(f"unknown permutation strategy {strategy!r}; choose from {STRATEGIES}")
    orders, labels = builder(query_id, n, perms, seed, tuple(relevant_positions))
    if labels[0] != IDENTITY:
        orders = [np.arange(n), *orders]
        labels = [REFERENCE, *labels]
    return PermutationPlan(query_id, np.asarray(orders, dtype=np.int64), tuple(labels))


def _random(query_id: str, n: int, perms: int, seed: int, _rel: tuple[int, ...]):
    if perms < 1:
        raise HarnessError(f"--perms must be at least 1 for the random strategy, got {perms}")
    rng = query_rng(seed, query_id)
    orders = [rng.permutation(n) for _ in range(perms)]
    return orders, [OrderLabel("random", index=i) for i in range(perms)]


def _identity(_q: str, n: int, _p: int, _s: int, _rel: tuple[int, ...]):
    return [np.arange(n)], [IDENTITY]


def _reversed(_q: str, n: int, _p: int, _s: int, _rel: tuple[int, ...]):
    return [np.arange(n)[::-1]], [OrderLabel("reversed")]


def _cyclic(_q: str, n: int, _p: int, _s: int, _rel: tuple[int, ...]):
    # Shift s shows candidate i at position (i + s) mod n: a Latin square, so every
    # candidate visits every position exactly once across the n shifts.
    base = np.arange(n)
    orders = [np.roll(base, shift) for shift in range(n)]
    return orders, [IDENTITY, *(OrderLabel("cyclic", index=s) for s in range(1, n))]


def _sweep(query_id: str, n: int, _p: int, _s: int, relevant: tuple[int, ...]):
    # Each judged-relevant candidate is moved through every position with the others kept in
    # first-stage order: the lost-in-the-middle curve. The identity row is shared.
    orders, labels = [np.arange(n)], [IDENTITY]
    if not relevant:
        return orders, labels
    for item in relevant:
        others = [i for i in range(n) if i != item]
        for pos in range(n):
            if pos == item:
                continue  # that order is the identity
            orders.append(np.array([*others[:pos], item, *others[pos:]]))
            labels.append(OrderLabel("sweep", item=item, position=pos))
    return orders, labels


def _exhaustive(query_id: str, n: int, _p: int, _s: int, _rel: tuple[int, ...]):
    if n > MAX_EXHAUSTIVE_N:
        raise HarnessError(
            f"exhaustive strategy refused for query {query_id!r}: {n} candidates would need "
            f"{math.factorial(n):,} orders (limit n <= {MAX_EXHAUSTIVE_N}; use --depth)"
        )
    orders = [np.array(p) for p in itertools.permutations(range(n))]
    labels = [IDENTITY, *(OrderLabel("exhaustive", index=i) for i in range(1, len(orders)))]
    return orders, labels


_BUILDERS: dict[str, Callable[..., tuple[list[np.ndarray], list[OrderLabel]]]] = {
    "random": _random,
    "identity": _identity,
    "reversed": _reversed,
    "cyclic": _cyclic,
    "sweep": _sweep,
    "exhaustive": _exhaustive,
}
