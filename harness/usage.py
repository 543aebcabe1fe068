"""What the work behind an output cost, as typed records summed in one place.

A reranker call's :class:`~harness.rerankers.base.CallFacts` carries its cost: the model's
forward passes and the tokens the method's tokenizer counted, and, on a remote backend, a
:class:`HttpUsage`: the requests behind the output, how many the on-disk cache answered,
and the server's own token counts. A meta-reranker sums its inner calls' :class:`Usage`, the
run summary sums its samples', both with ``+`` (:func:`total`), so a count means the same
wherever it is read.

On disk nothing changed: a sample's ``facts`` keep the local counts at the top level and each
request's record (``harness.backends.openai_backend.call_record``) in ``extra``, under
``window_details[i].http`` (a listwise window), ``calibration_details[i].http`` (CapCal's
content-free pass) or ``http`` (a set's or a debiaser's summary, :meth:`HttpUsage.stored`).
:func:`stored_usage` reads those back, for current and older run folders alike.

Cheap to import (no numpy): the store and the CLI read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Self, TypeVar


class _Summable:
    """Adds records field by field (every field is a count or a summable record)."""

    def __add__(self, other: Self) -> Self:
        if type(other) is not type(self):
            return NotImplemented
        names = [f.name for f in fields(self)]  # type: ignore[arg-type]
        return type(self)(**{n: getattr(self, n) + getattr(other, n) for n in names})


@dataclass(frozen=True)
class HttpUsage(_Summable):
    """Requests a remote backend sent (or its cache answered, or a dry run counted) and the
    token counts the server reported for them; all zero on a local backend."""

    requests: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @classmethod
    def of_record(cls, record: Mapping[str, Any]) -> HttpUsage:
        """One stored ``http`` record: a request's (``cached`` a bool, the server's
        ``prompt_tokens``/``completion_tokens``, no ``requests``: one) or a summary of several
        (:meth:`stored`)."""
        return cls(
            requests=int(record.get("requests", 1)),
            cached=int(record.get("cached") or 0),
            prompt_tokens=int(record.get("server_prompt_tokens", record.get("prompt_tokens")) or 0),
            completion_tokens=int(
                record.get("server_completion_tokens", record.get("completion_tokens")) or 0
            ),
        )

    @classmethod
    def of_calls(cls, records: Iterable[Mapping[str, Any]]) -> HttpUsage:
        """The requests behind ``records``, a backend's per-row call records (a local
        backend's are empty: no request)."""
        return total((cls.of_record(r) for r in records if r), cls())

    def stored(self) -> dict[str, int]:
        """The summary shape ``extra.http`` stores (a pointwise set's, a debiaser's)."""
        return {
            "requests": self.requests,
            "cached": self.cached,
            "server_prompt_tokens": self.prompt_tokens,
            "server_completion_tokens": self.completion_tokens,
        }


NO_REQUESTS = HttpUsage()
"""What a local backend's output sent: nothing."""


@dataclass(frozen=True)
class Usage(_Summable):
    """The cost of one output (or of a run, summed): model forward passes, prompt and generated
    tokens counted with the method's tokenizer, and a remote backend's requests."""

    forward_passes: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    http: HttpUsage = field(default_factory=HttpUsage)


_T = TypeVar("_T", Usage, HttpUsage)


def total(records: Iterable[_T], start: _T) -> _T:
    """The sum of ``records`` (``start`` when there are none): the one way costs add up."""
    result = start
    for record in records:
        result = result + record
    return result


def stored_http_records(extra: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The ``http`` records a sample's stored ``facts.extra`` holds: one per window of a
    listwise method and per content-free pass of CapCal, or a set's or a debiaser's summary."""
    records = [
        d["http"]
        for key in ("window_details", "calibration_details")
        for d in extra.get(key, ())
        if "http" in d
    ]
    if "http" in extra:
        records.append(extra["http"])
    return records


def stored_usage(facts: Mapping[str, Any]) -> Usage:
    """A stored sample's ``facts`` (as ``samples.jsonl`` holds them) as a :class:`Usage`."""
    records = stored_http_records(facts.get("extra") or {})
    return Usage(
        forward_passes=int(facts.get("forward_passes") or 0),
        prompt_tokens=int(facts.get("prompt_tokens") or 0),
        generated_tokens=int(facts.get("generated_tokens") or 0),
        http=total((HttpUsage.of_record(r) for r in records), HttpUsage()),
    )
