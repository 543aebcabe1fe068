"""A radix tree over the token rows of one call, so that each distinct prefix runs once.

Orders of one candidate set share prompt prefixes: every order shares the instruction and the
query, ``fixed`` designs share the pinned head, ``exhaustive``, ``sweep`` and ``templates``
share long runs of candidates. Under a causal mask with sequential positions, a token's
hidden state depends only on the tokens before it, so rows that agree up to a column have the
same hidden states (and keys and values) up to it. The tree holds each distinct run of tokens
once: a node is a span ``[start, end)`` of columns shared by every row below it, and a row is
the path from the root to its ``terminal`` node. Pure data (NumPy and Python), no model
library: the transformers backend walks it (:meth:`TransformersBackend.tree_reads`).

Only for causal prompts. InvariRank's orders are never shared: its invariance must be
measured, not built in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PrefixTree:
    """Nodes (``start``, ``end``, ``parent`` (-1: the root, i.e. the already computed prefix),
    ``rep``: a row that holds the node's tokens), the children of each node and of the root,
    and each row's ``terminal`` node (where the row ends)."""

    start: np.ndarray
    end: np.ndarray
    parent: np.ndarray
    rep: np.ndarray
    children: tuple[tuple[int, ...], ...]
    roots: tuple[int, ...]
    terminal: np.ndarray

    @property
    def tokens(self) -> int:
        """Tokens the tree computes: each distinct prefix once."""
        return int((self.end - self.start).sum())

    def path(self, row: int) -> list[int]:
        """Nodes from the root's child to the row's terminal node."""
        nodes = []
        node = int(self.terminal[row])
        while node >= 0:
            nodes.append(node)
            node = int(self.parent[node])
        return nodes[::-1]


def build_prefix_tree(rows: Sequence[Sequence[int]]) -> PrefixTree:
    """The radix tree of ``rows`` (each non-empty), from the rows sorted lexicographically and
    the longest common prefix of neighbours (a stack holds the previous row's path)."""
    keyed = [tuple(int(t) for t in row) for row in rows]
    if any(not row for row in keyed):
        raise ValueError("a row of a prefix tree is empty")
    order = sorted(range(len(keyed)), key=keyed.__getitem__)
    start: list[int] = []
    end: list[int] = []
    parent: list[int] = []
    rep: list[int] = []
    terminal = np.zeros(len(keyed), dtype=np.int64)
    stack: list[int] = []
    previous: tuple[int, ...] = ()
    for index in order:
        row = keyed[index]
        shared = _common_length(previous, row)
        while stack and start[stack[-1]] >= shared:
            stack.pop()
        if stack and end[stack[-1]] > shared:  # the branch point falls inside this node: split
            top = stack[-1]
            start.append(start[top])
            end.append(shared)
            parent.append(parent[top])
            rep.append(rep[top])
            start[top], parent[top] = shared, len(start) - 1
            stack[-1] = len(start) - 1
        if len(row) > shared:
            start.append(shared)
            end.append(len(row))
            parent.append(stack[-1] if stack else -1)
            rep.append(index)
            stack.append(len(start) - 1)
        terminal[index] = stack[-1]
        previous = row
    children: list[list[int]] = [[] for _ in start]
    roots: list[int] = []
    for node, up in enumerate(parent):
        (children[up] if up >= 0 else roots).append(node)
    return PrefixTree(
        start=np.array(start, dtype=np.int64),
        end=np.array(end, dtype=np.int64),
        parent=np.array(parent, dtype=np.int64),
        rep=np.array(rep, dtype=np.int64),
        children=tuple(tuple(c) for c in children),
        roots=tuple(roots),
        terminal=terminal,
    )


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    length = min(len(a), len(b))
    if not length:
        return 0
    differ = np.flatnonzero(np.asarray(a[:length]) != np.asarray(b[:length]))
    return int(differ[0]) if differ.size else length


def level_edges(tree: PrefixTree) -> np.ndarray:
    """The longest node (``end`` - ``start``) at each depth of the tree (the roots' children
    at depth 0)."""
    edges: list[int] = []
    level = list(tree.roots)
    while level:
        edges.append(int((tree.end[level] - tree.start[level]).max()))
        level = [c for node in level for c in tree.children[node]]
    return np.array(edges, dtype=np.int64)


def tree_reads(
    tree: PrefixTree, columns: Sequence[np.ndarray], targets: Sequence[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Where each row's wanted hidden states are computed, each distinct read once.

    ``columns[r]``: the columns of row ``r`` whose hidden state the caller needs;
    ``targets[r]``: the token each of them is read for (rows that share a column's hidden
    state may differ in the token after it, where they branch), or None. Returns the distinct
    reads as (node, column, target) sorted by node, and for each row the index of each of its
    columns' read in them."""
    nodes, cols, wants = [], [], []
    for row, wanted in enumerate(columns):
        wanted = np.asarray(wanted, dtype=np.int64)
        path = np.array(tree.path(row), dtype=np.int64)
        where = np.searchsorted(tree.start[path], wanted, side="right") - 1
        nodes.append(path[where])
        cols.append(wanted)
        wants.append(np.zeros_like(wanted) if targets is None else np.asarray(targets[row]))
    if not nodes:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, []
    keys = np.stack([np.concatenate(nodes), np.concatenate(cols), np.concatenate(wants)], 1)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    split = np.cumsum([len(c) for c in cols])[:-1]
    return unique[:, 0], unique[:, 1], unique[:, 2], np.split(inverse.reshape(-1), split)
