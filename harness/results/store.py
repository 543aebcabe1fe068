"""The run folder on disk: ``run.json`` and ``queries.jsonl`` (what is being run), and
``samples.jsonl`` (what is done). Their records are typed in :mod:`harness.results.schema`.

One JSON line per (query, order) is appended and flushed as soon as it is computed, so an
interrupted run loses at most the batch in flight. Reopening a folder resumes it: the
config hash in ``run.json`` must match, and finished (query, order) pairs are skipped. A
folder of an older format with the same configuration is brought to the current format as it
is reopened (its samples are kept).
"""

from __future__ import annotations

import itertools
import json
import os
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from harness.errors import HarnessError
from harness.files import ensure_writable_folder, iter_json, read_json_object, write_text_atomic
from harness.permutations import OrderLabel
from harness.results.schema import (
    FORMAT_VERSION,
    QueryRecord,
    RunHeader,
    RunResults,
    check_format,
    format_of,
)
from harness.usage import Usage, stored_usage
from harness.validity import invalid_answers

RUN_FILE = "run.json"
QUERIES_FILE = "queries.jsonl"
SAMPLES_FILE = "samples.jsonl"
RESULTS_FILE = "results.json"
SUMMARY_FILE = "summary.md"
IDENTITY_FILE = "reranker_identity.json"
FAILURES_FILE = "failures.json"  # work units that failed on every attempt (Ray executor)


@dataclass(frozen=True)
class Sample:
    """The reranker's output for one shown order of one query."""

    query_id: str
    order_index: int
    label: OrderLabel
    shown: tuple[int, ...]  # candidate indices (first-stage positions) in shown order
    ranking: tuple[str, ...]  # candidate ids, best first
    scores: Mapping[str, float] | None
    facts: Mapping[str, Any]

    @property
    def key(self) -> tuple[str, int]:
        return (self.query_id, self.order_index)

    @property
    def invalid(self) -> bool:
        """Whether an answer behind this output stayed invalid (:mod:`harness.validity`): its
        ranking is a fallback, left out of the metrics and asked again by a rerun."""
        return invalid_answers(self.facts) > 0

    @property
    def usage(self) -> Usage:
        """What the work behind this output cost, read from its stored facts."""
        return stored_usage(self.facts)

    def to_json(self) -> str:
        return json.dumps(
            {
                "query_id": self.query_id,
                "order_index": self.order_index,
                "label": str(self.label),
                "shown": list(self.shown),
                "ranking": list(self.ranking),
                "scores": None if self.scores is None else dict(self.scores),
                "facts": dict(self.facts),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sample:
        return cls(
            query_id=str(data["query_id"]),
            order_index=int(data["order_index"]),
            label=OrderLabel.parse(str(data["label"])),
            shown=tuple(map(int, data["shown"])),  # map: a third of a summary's reading time
            ranking=tuple(map(str, data["ranking"])),
            scores=data.get("scores"),
            facts=data.get("facts") or {},
        )


class SampleIndex:
    """Where each sample of a ``samples.jsonl`` is: per query, its order indices and byte
    offsets (compact arrays), so a resume checks keys and a summary reads one query's samples
    at a time; memory grows with the number of samples by 16 bytes each, not with their size.
    A key written twice (a unit re-run after a fault) counts once: the last line wins.
    Keys whose last sample is invalid are kept apart (:meth:`invalid_orders`) where the
    samples were parsed, so a resumed run asks them again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._orders: dict[str, array[int]] = {}
        self._offsets: dict[str, array[int]] = {}
        self._invalid: dict[str, set[int]] = {}

    def add(self, query_id: str, order_index: int, offset: int, invalid: bool = False) -> None:
        if invalid:
            self._invalid.setdefault(query_id, set()).add(order_index)
        elif query_id in self._invalid:
            self._invalid[query_id].discard(order_index)
        if query_id not in self._orders:
            self._orders[query_id], self._offsets[query_id] = array("q"), array("q")
        self._orders[query_id].append(order_index)
        self._offsets[query_id].append(offset)

    def done(self, query_id: str) -> set[int]:
        """The order indices of ``query_id`` that have a sample."""
        return set(self._orders.get(query_id, ()))

    def invalid_orders(self, query_id: str) -> set[int]:
        """The order indices of ``query_id`` whose (last) sample is invalid."""
        return set(self._invalid.get(query_id, ()))

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        return key[1] in self._orders.get(key[0], ())

    def __len__(self) -> int:
        return sum(len(set(orders)) for orders in self._orders.values())

    def query_ids(self) -> list[str]:
        return list(self._orders)

    def has_query(self, query_id: str) -> bool:
        return query_id in self._orders

    def query_samples(self, query_id: str) -> list[Sample]:
        """The samples of one query, read from disk, by order index."""
        latest = dict(
            zip(self._orders.get(query_id, ()), self._offsets.get(query_id, ()), strict=True)
        )
        samples = []
        with self.path.open("rb") as handle:
            for order in sorted(latest):
                handle.seek(latest[order])
                try:
                    samples.append(Sample.from_dict(json.loads(handle.readline())))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                    where = f"{self.path} (byte {latest[order]})"
                    raise HarnessError(f"{where}: corrupt sample record ({exc})") from exc
        return samples


class InMemorySamples:
    """A mapping of samples seen through :class:`SampleIndex`'s reading interface (tests and
    callers that already hold samples)."""

    def __init__(self, samples: Mapping[tuple[str, int], Sample]) -> None:
        self._by_query: dict[str, dict[int, Sample]] = {}
        for sample in samples.values():
            self._by_query.setdefault(sample.query_id, {})[sample.order_index] = sample

    def has_query(self, query_id: str) -> bool:
        return query_id in self._by_query

    def query_samples(self, query_id: str) -> list[Sample]:
        found = self._by_query.get(query_id, {})
        return [found[order] for order in sorted(found)]


class RunStore:
    """Append-only access to one run folder."""

    def __init__(self, run_dir: Path, *, needs_header: bool = False) -> None:
        self.run_dir = run_dir
        self.needs_header = needs_header  # new folder, or one of an older format
        self.index: SampleIndex | None = None  # set by scan_samples
        self._handle: IO[bytes] | None = None

    @classmethod
    def open(cls, run_dir: Path, config_hash: str, header: RunHeader | None = None) -> RunStore:
        """Open a folder for (resumed) reranking; nothing is written yet.

        A folder of another configuration, or of a newer format, is refused. A new folder or
        one of an older format ``needs_header``: :meth:`write_header` writes ``run.json`` and
        ``queries.jsonl`` once the run knows it may go on (a resumed format-1 folder then
        leaves in the current format).
        """
        run_file = run_dir / RUN_FILE
        if not run_file.exists():
            return cls(run_dir, needs_header=True)
        existing = read_json_object(run_file, "harness run file")
        version = format_of(existing)
        if version is None or version > FORMAT_VERSION:
            check_format(existing, str(run_file))  # raises: not a run, or a newer harness's
        if existing.get("config_hash") != config_hash:
            differences = "" if header is None else _differences(existing, header.to_dict())
            raise HarnessError(
                f"{run_dir} holds a run with a different configuration "
                f"({differences or 'config hash ' + str(existing.get('config_hash'))}); "
                "use another --out or delete the folder"
            )
        stale = version != FORMAT_VERSION or not (run_dir / QUERIES_FILE).is_file()
        return cls(run_dir, needs_header=stale)

    def write_header(self, header: RunHeader, queries: Iterable[QueryRecord]) -> None:
        """Write ``queries.jsonl`` (streamed: one query in memory at a time), then
        ``run.json`` (last: it marks the folder usable)."""
        ensure_writable_folder(self.run_dir, "the run folder")
        lines = (json.dumps(q.to_dict(), separators=(",", ":")) + "\n" for q in queries)
        self.write_text(QUERIES_FILE, lines)
        self.write_json(RUN_FILE, header.to_dict())
        self.needs_header = False

    def scan_samples(
        self,
        check: Callable[[Sample], str | None] | None = None,
        *,
        truncate: bool = True,
        keys_only: bool = False,
    ) -> SampleIndex:
        """Index every complete sample on disk, keeping none in memory; a torn last line
        (crash mid-write) is dropped.

        ``check`` returns what is wrong with a sample (e.g. not this run's order), or None;
        a problem is a HarnessError naming the file and line. ``truncate=False`` (a dry run)
        leaves a torn last line on disk for the run that may still be writing it. Samples
        appended later are added to the same index. ``keys_only`` (readers that parse each
        sample later, by query) reads a line's key from its first bytes where
        :meth:`Sample.to_json` put it, parsing only lines written otherwise.
        """
        path = self.run_dir / SAMPLES_FILE
        index = SampleIndex(path)
        self.index = index
        if not path.exists():
            return index
        good_bytes = 0
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.endswith(b"\n"):
                    break  # torn final line (even one that parses): recomputed, not appended to
                key = _leading_key(raw) if keys_only and check is None else None
                invalid = False
                if key is None:
                    try:
                        sample = Sample.from_dict(json.loads(raw))
                    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                        message = f"{path}:{number}: corrupt sample record ({exc})"
                        raise HarnessError(message) from exc
                    problem = check(sample) if check is not None else None
                    if problem:
                        raise HarnessError(f"{path}:{number}: {problem}")
                    key, invalid = sample.key, sample.invalid
                index.add(*key, good_bytes, invalid)
                good_bytes += len(raw)
        if truncate and good_bytes < path.stat().st_size:
            with path.open("r+b") as handle:
                handle.truncate(good_bytes)
        return index

    def append(self, samples: list[Sample]) -> None:
        """Append, flush and fsync one batch; the index (if scanned) learns where each is."""
        if self._handle is None:
            self._handle = (self.run_dir / SAMPLES_FILE).open("ab")
            self._handle.seek(0, os.SEEK_END)
        offset = self._handle.tell()
        lines = [(s.to_json() + "\n").encode() for s in samples]
        self._handle.write(b"".join(lines))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        if self.index is not None:
            for sample, line in zip(samples, lines, strict=True):
                self.index.add(sample.query_id, sample.order_index, offset, sample.invalid)
                offset += len(line)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def write_json(self, name: str, payload: Mapping[str, Any]) -> Path:
        path = self.run_dir / name
        _write_json_atomic(path, payload)
        return path

    def read_json(self, name: str) -> dict[str, Any]:
        """A JSON file of this run, or an empty mapping when it was never written."""
        path = self.run_dir / name
        return read_json_object(path, name) if path.exists() else {}

    def write_text(self, name: str, text: str | Iterable[str]) -> Path:
        path = self.run_dir / name
        write_text_atomic(path, text)
        return path


def iter_samples(run_dir: Path) -> Iterator[Sample]:
    """Stream a finished run's samples (reports, exports, the Python API), query by query and
    by order index, reading them as the metrics do: a key written twice (a unit re-run after
    a fault) once, its last line. Memory holds one query's samples and the index."""
    if not (run_dir / SAMPLES_FILE).is_file():
        raise HarnessError(f"cannot read {run_dir / SAMPLES_FILE}: no such file")
    index = RunStore(run_dir).scan_samples(truncate=False, keys_only=True)
    for query_id in index.query_ids():
        yield from index.query_samples(query_id)


def holds_samples(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds at least one complete sample line (a torn one is none), read
    only as far as the first newline."""
    try:
        with (run_dir / SAMPLES_FILE).open("rb") as handle:
            return any(b"\n" in chunk for chunk in iter(lambda: handle.read(1 << 16), b""))
    except OSError:  # no folder, no file, or not readable: nothing the user can resume from
        return False


_LEADING_KEY = re.compile(rb'\{"query_id":("(?:[^"\\]|\\.)*"),"order_index":(\d+),')


def _leading_key(raw: bytes) -> tuple[str, int] | None:
    """(query id, order index) from the start of a line as :meth:`Sample.to_json` writes it,
    without parsing the rest; None for a line that starts otherwise."""
    found = _LEADING_KEY.match(raw)
    return (json.loads(found[1]), int(found[2])) if found else None


def read_queries(run_dir: Path) -> dict[str, QueryRecord]:
    """``queries.jsonl`` by query id: doc ids, judgments and text of every query of the run."""
    return {
        q.query_id: q for q in _iter_records(run_dir / QUERIES_FILE, QueryRecord.from_dict, "query")
    }


def _iter_records(path: Path, build: Any, what: str) -> Iterator[Any]:
    """One record per non-empty JSON line; a bad line is a HarnessError naming file:line."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise HarnessError(f"cannot read {path}: {exc.strerror}") from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield build(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
                raise HarnessError(f"{path}:{number}: corrupt {what} record ({exc})") from exc


def read_results_data(run_dir: Path) -> dict[str, Any]:
    """``results.json`` of a finished run as plain JSON; HarnessError saying what the folder
    is instead (missing, unfinished, not a run)."""
    if not run_dir.is_dir():
        raise HarnessError(f"run folder not found: {run_dir}")
    results_file = run_dir / RESULTS_FILE
    if not results_file.is_file():
        if (run_dir / RUN_FILE).is_file():
            raise HarnessError(
                f"{run_dir} is an unfinished run (no {RESULTS_FILE}); rerun `harness run` with "
                f"--out {run_dir} to finish it"
            )
        raise HarnessError(f"{run_dir} is not a run folder (no {RUN_FILE} or {RESULTS_FILE})")
    return read_json_object(results_file, "harness results file")


def read_results(run_dir: Path) -> RunResults:
    """``results.json`` of a finished run, format-checked and typed."""
    return RunResults.from_dict(read_results_data(run_dir), where=str(run_dir / RESULTS_FILE))


def _write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    """Streamed: the pieces go to the file as they come, so a large results file is never
    one string in memory."""
    write_text_atomic(path, itertools.chain(iter_json(payload, default=str), ["\n"]))


def _differences(recorded: Mapping[str, Any], new: Mapping[str, Any], limit: int = 4) -> str:
    """``perms: 20 -> 5; reranker.params.max_history: None -> 10``: the settings that make the
    configuration hashes differ (run settings, reranker preset, dataset content)."""
    from harness.options import OMITTED_AT

    changes = []
    for section in ("config", "reranker"):
        old, now = recorded.get(section) or {}, new.get(section) or {}
        # a setting left out of the configuration at its default is shown as that default
        absent = OMITTED_AT if section == "config" else {}
        for key in sorted(old.keys() | now.keys()):
            before, after = old.get(key, absent.get(key)), now.get(key, absent.get(key))
            if key in ("source", "identity") or before == after:
                continue
            name = key if section == "config" else f"reranker {key}"
            changes.append(f"{name}: {before!r} -> {after!r}")
    fingerprint = (recorded.get("dataset") or {}).get("fingerprint")
    if fingerprint != (new.get("dataset") or {}).get("fingerprint"):
        changes.append("the dataset's content (fingerprint) changed")
    shown = changes[:limit] + ([f"and {len(changes) - limit} more"] if len(changes) > limit else [])
    return "; ".join(shown)
