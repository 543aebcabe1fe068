"""A reranker made from a plain Python function, with honest provenance.

A researcher's method is often just ``score(query, docs) -> scores`` (the convention of
AnswerDotAI/rerankers) or ``order(query, docs) -> indices best first``. :func:`from_scores`
and :func:`from_order` wrap such a function; the run then records the function itself as
the reranker (its name, ``module:qualname`` and a hash of its source), never a placeholder
preset. It is not declared order-invariant unless the caller says so, and a declaration is
checked like any other: the gate fails a declared-invariant reranker on any query whose
ranking moved.

A preset YAML can name an importable function too::

    name: overlap
    adapter: callable
    params: {function: mypackage.scoring:overlap, kind: scores}
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import math
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.data.model import CandidateSet, TextQuery
from harness.errors import HarnessError
from harness.rerankers.base import (
    CallFacts,
    Reranker,
    RerankOutput,
    RunContext,
    ranking_from_scores,
)
from harness.rerankers.preset import RerankerPreset

KINDS = ("scores", "order")
ADAPTER = "callable"
"""The adapter kind (``harness.rerankers.registry.ADAPTERS``) a function's preset names."""

ScoreFn = Callable[[str, list[str]], Sequence[float]]
OrderFn = Callable[[str, list[str]], Sequence[int]]


@dataclass(frozen=True)
class FunctionReranker:
    """A function and how to read its output, ready to run (``harness.evaluate`` takes it).

    ``kind``: ``scores`` (one number per doc, in the order given, higher is better; ties are
    broken by doc id, never by the shown order) or ``order`` (indices into the docs given,
    best first, each exactly once).
    """

    fn: Callable[[str, list[str]], Sequence[Any]]
    kind: str
    name: str
    order_invariant: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise HarnessError(f"reranker {self.name!r}: {self.fn!r} is not callable")
        if self.kind not in KINDS:
            raise HarnessError(f"reranker {self.name!r}: kind must be one of {KINDS}")

    def preset(self) -> RerankerPreset:
        """What ``results.json`` records as the reranker: the function, not a stand-in. A
        function nothing can import later (defined in ``__main__``, nested, a lambda) is
        recorded as such, with how to rebuild it, and warned about."""
        description = self.description or f"{self.kind} function {function_path(self.fn)}"
        note = rebuild_note(self.fn)
        if note is not None:
            warnings.warn(note, stacklevel=3)
            description += f" ({note.split(': ', 1)[1]})"
        return RerankerPreset(
            name=self.name,
            adapter=ADAPTER,
            description=description,
            order_invariant=self.order_invariant,
            params={
                "function": function_path(self.fn),
                "kind": self.kind,
                "source_sha256": function_sha256(self.fn),
            },
        )

    def build(self, preset: RerankerPreset, context: RunContext) -> CallableReranker:
        """The adapter for a run (the runner's ``reranker_factory``)."""
        reranker = CallableReranker(preset.name, context, **dict(preset.params), fn=self.fn)
        reranker.order_invariant = preset.order_invariant
        return reranker


def from_scores(
    fn: ScoreFn, *, name: str | None = None, order_invariant: bool = False
) -> FunctionReranker:
    """Wrap ``fn(query, docs) -> one score per doc`` (higher is better)."""
    return FunctionReranker(fn, "scores", name or default_name(fn), order_invariant)


def from_order(
    fn: OrderFn, *, name: str | None = None, order_invariant: bool = False
) -> FunctionReranker:
    """Wrap ``fn(query, docs) -> indices into docs, best first``."""
    return FunctionReranker(fn, "order", name or default_name(fn), order_invariant)


class CallableReranker(Reranker):
    """Calls the function once per shown order with the query text and the docs' texts in
    that order. A recommendation query is passed as its history, one line per item."""

    def __init__(
        self,
        name: str,
        context: RunContext,
        function: str,
        kind: str = "scores",
        source_sha256: str | None = None,
        *,
        fn: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(name, context)
        if kind not in KINDS:
            raise HarnessError(f"reranker {name!r}: param 'kind' must be one of {KINDS}")
        self.fn = fn if fn is not None else import_function(function, name)
        self.kind = kind
        self.function = function
        self.source_sha256 = function_sha256(self.fn)
        if source_sha256 is not None and source_sha256 != self.source_sha256:
            raise HarnessError(
                f"reranker {name!r}: the source of {function} changed since its preset was "
                "written (source_sha256 differs); update the preset or restore the function"
            )

    def identity(self) -> dict[str, Any]:
        return {
            "adapter": type(self).__name__,
            "order_invariant": self.order_invariant,
            "function": self.function,
            "kind": self.kind,
            "source_sha256": self.source_sha256,
        }

    def _rerank_batch(self, candidate_set: CandidateSet, orders: np.ndarray) -> list[RerankOutput]:
        from harness.rerankers.prompts.base import candidate_text, render_context

        query = candidate_set.query
        text = query.text if isinstance(query, TextQuery) else render_context(query)
        candidates = candidate_set.candidates
        results = []
        start = time.perf_counter()
        for row in orders:
            shown = [candidates[int(i)] for i in row]
            output = self.fn(text, [candidate_text(c) for c in shown])
            ids = [c.doc_id for c in shown]
            results.append(self._read(output, ids, candidate_set.query_id))
        call_ms = (time.perf_counter() - start) * 1000.0
        facts = CallFacts(
            latency_ms=call_ms / len(orders), call_latency_ms=call_ms, batch_size=len(orders)
        )
        return [RerankOutput(ranking, facts, scores) for ranking, scores in results]

    def _read(
        self, output: Any, ids: list[str], query_id: str
    ) -> tuple[tuple[str, ...], dict[str, float] | None]:
        where = f"reranker {self.name!r} ({self.function}) on query {query_id!r}"
        try:
            values = list(output)
        except TypeError:
            raise HarnessError(
                f"{where}: returned {type(output).__name__}, not a sequence"
            ) from None
        if len(values) != len(ids):
            raise HarnessError(f"{where}: returned {len(values)} values for {len(ids)} docs")
        if self.kind == "scores":
            try:
                scores = [float(v) for v in values]
            except (TypeError, ValueError):
                raise HarnessError(f"{where}: returned a score that is not a number") from None
            if not all(math.isfinite(s) for s in scores):
                raise HarnessError(f"{where}: returned a NaN or infinite score")
            return ranking_from_scores(ids, scores), dict(zip(ids, scores, strict=True))
        try:
            index = [int(v) for v in values]
        except (TypeError, ValueError):
            raise HarnessError(f"{where}: returned an index that is not an integer") from None
        if sorted(index) != list(range(len(ids))):
            raise HarnessError(
                f"{where}: returned {index[:8]}..., not each index 0..{len(ids) - 1} once"
            )
        return tuple(ids[i] for i in index), None


def function_path(fn: Callable[..., Any]) -> str:
    """``module:qualname`` (what a preset's ``function`` param takes, where importable)."""
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else type(fn)
    module = getattr(target, "__module__", None) or "?"
    return f"{module}:{getattr(target, '__qualname__', repr(target))}"


def rebuild_note(fn: Callable[..., Any]) -> str | None:
    """Why the recorded ``module:qualname`` of ``fn`` cannot be imported later, and how to
    rebuild the reranker; None when it can be imported (a preset can name it)."""
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else type(fn)
    path = function_path(fn)
    qualname = getattr(target, "__qualname__", "")
    if getattr(target, "__module__", None) == "__main__":
        script = getattr(sys.modules.get("__main__"), "__file__", None)
        where = f"the script {Path(script).name}" if script else "an interactive session"
        return (
            f"{path} cannot be imported by a later run: defined in {where} (__main__); to "
            "rebuild this reranker, run that code again or move the function into a module "
            "and name it as params.function in a preset (source_sha256 checks it is the same)"
        )
    if "<locals>" in qualname or "<lambda>" in qualname:
        return (
            f"{path} cannot be imported by a later run: a nested function or lambda; to "
            "rebuild this reranker, run that code again or define the function at the top "
            "level of a module and name it as params.function in a preset"
        )
    return None


def default_name(fn: Callable[..., Any]) -> str:
    """The function's name as a reranker name (``<lambda>`` becomes ``lambda``)."""
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else type(fn)
    return re.sub(r"[^A-Za-z0-9_.-]+", "", getattr(target, "__name__", "")) or "function"


def function_sha256(fn: Callable[..., Any]) -> str:
    """sha256 of the function's source (its class's, for a callable object); where no source
    exists (a function typed at a prompt), of its bytecode and constants instead."""
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else type(fn)
    try:
        text = inspect.getsource(target)
    except (OSError, TypeError):
        code = getattr(inspect.unwrap(target), "__code__", None)
        text = "bytecode:" + (repr((code.co_code, code.co_consts)) if code else repr(target))
    return hashlib.sha256(text.encode()).hexdigest()


def import_function(path: str, name: str) -> Callable[..., Any]:
    """``package.module:function`` imported, in one-line errors."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise HarnessError(
            f"reranker {name!r}: param 'function' must be 'package.module:function', got {path!r}"
        )
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except Exception as exc:  # the user's module may fail in any way
        raise HarnessError(
            f"reranker {name!r}: cannot import {path!r}: {type(exc).__name__}: {exc}"
        ) from exc
    if not callable(target):
        raise HarnessError(f"reranker {name!r}: {path!r} is not callable")
    return target
