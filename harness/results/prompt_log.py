"""``--log-prompts``: the exact prompt text and raw model output of every model call.

Results keep only the prompt template's hash; when a ranking surprises you, this log shows
what the model read and what it answered. It is opt-in (a DL19 run at depth 100 logs
megabytes) and never part of the configuration: turning it on changes no number and no
config hash.

One JSON line per backend call in ``prompts.jsonl`` in the run folder: ``query_id``,
``order_index`` (the orders of the reranker call it belongs to), ``call`` (0, 1, ... within
that reranker call: the windows of a sliding-window method, in order), ``kind``
(``generate``, ``next_token`` or ``masked``), ``prompts`` (one decoded prompt per row of the
batch sent to the model; a method that batches orders sends row i for the i-th order) and
``outputs`` (per row: the generated text, or the chosen tokens' log-probabilities). A
reranker call's lines are written when the call returns; on resume, lines of calls whose
samples were not saved are dropped before new ones are appended, so each saved order's
calls appear once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.files import write_text_atomic

if TYPE_CHECKING:
    from harness.results.store import SampleIndex

PROMPTS_FILE = "prompts.jsonl"


@dataclass
class _Call:
    query_id: str
    rows: tuple[int, ...]
    records: list[dict[str, Any]] = field(default_factory=list)


_CURRENT: ContextVar[_Call | None] = ContextVar("harness_prompt_call", default=None)


class PromptLog:
    """Appends the calls of one run to ``prompts.jsonl``, keeping only saved orders' lines."""

    def __init__(self, run_dir: Path, done: SampleIndex) -> None:
        self.path = run_dir / PROMPTS_FILE
        if self.path.is_file():
            finished: dict[str, set[int]] = {}  # per query, read once from the index
            kept = [line for line in _lines(self.path) if _saved(line, done, finished)]
            write_text_atomic(self.path, "".join(f"{line}\n" for line in kept))
        self._file = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()  # parallel HTTP calls finish in threads

    def attach(self, reranker: Any) -> None:
        """Log every backend call of ``reranker`` (and of the rerankers it wraps)."""
        from harness.rerankers.debiasers.meta import wrap_backends

        wrap_backends(reranker, LoggingBackend)

    @contextmanager
    def call(self, query_id: str, rows: list[int]) -> Iterator[None]:
        """Collect the backend calls made inside; write them once the reranker call returns."""
        record = _Call(query_id, tuple(rows))
        token = _CURRENT.set(record)
        try:
            yield
        finally:
            _CURRENT.reset(token)
        lines = [
            json.dumps({"query_id": query_id, "order_index": list(rows), "call": k, **entry},
                       ensure_ascii=False) + "\n"
            for k, entry in enumerate(record.records)
        ]  # fmt: skip
        with self._lock:  # one call's lines stay together
            self._file.write("".join(lines))
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def _lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def _saved(line: str, done: SampleIndex, finished: dict[str, set[int]]) -> bool:
    """Whether every order of the logged call was saved (a torn line is not)."""
    try:
        data = json.loads(line)
        query_id = data["query_id"]
        if query_id not in finished:
            finished[query_id] = done.done(query_id)
        return all(int(i) in finished[query_id] for i in data["order_index"])
    except (ValueError, KeyError, TypeError):
        return False


class LoggingBackend:
    """A backend that records each call's decoded prompts and outputs in the current
    :meth:`PromptLog.call`, and otherwise is the backend it wraps."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._prefix_text = ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _decode(self, tokens: Any) -> str:
        return str(self._inner.tokenizer.decode([int(t) for t in tokens]))

    def _record(self, kind: str, prompts: list[str], outputs: list[Any]) -> None:
        call = _CURRENT.get()
        if call is not None:
            call.records.append({"kind": kind, "prompts": prompts, "outputs": outputs})

    def next_token_logprobs(self, batch: Any, token_ids: Any) -> Any:
        scores = self._inner.next_token_logprobs(batch, token_ids)
        names = [self._decode([t]) for t in token_ids]
        outputs = [dict(zip(names, _finite(row), strict=True)) for row in scores.logprobs.tolist()]
        self._record("next_token", [self._decode(row) for row in batch.rows], outputs)
        return scores

    def generate(self, batch: Any, request: Any) -> Any:
        generation = self._inner.generate(batch, request)
        self._record("generate", [self._decode(row) for row in batch.rows], list(generation.texts))
        return generation

    def prefix(self, token_ids: Any) -> Any:
        self._prefix_text = self._decode(token_ids)  # what the masked rows are read after
        return self._inner.prefix(token_ids)

    def query_attention(self, prefixes: Any, queries: Any, layers: Any) -> Any:
        read = self._inner.query_attention(prefixes, queries, layers)
        prompts = [
            self._decode(prefix) + self._decode(query) for prefix in prefixes for query in queries
        ]
        self._record("query_attention", prompts, [None] * len(prompts))  # attention is not text
        return read

    def masked_logprobs(self, prefix: Any, request: Any) -> Any:
        values = self._inner.masked_logprobs(prefix, request)
        prompts = [self._prefix_text + self._decode(row) for row in request.tokens]
        self._record("masked", prompts, [_finite(values.tolist())])
        return values


def _finite(value: Any) -> Any:
    """JSON has no -inf: a log-probability the backend could not return is null."""
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value if value == value and abs(value) != float("inf") else None
