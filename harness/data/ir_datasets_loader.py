"""``ir_datasets`` ids (``msmarco-passage/trec-dl-2019/judged``, ``beir/scifact/test``, ...).

An optional extra (``pip install 'harness-rerank[ir-datasets]'``); give an id on the command
line as ``--dataset irds:<id>`` or in a card (``format: ir-datasets``, ``id: <id>``).

Never a hang: ir_datasets downloads lazily while data is being read and retries for minutes
when the network is down. So before reading anything this loader walks the dataset's
download objects and checks which files are already in the ir_datasets cache
(``$IR_DATASETS_HOME``, default ``~/.ir_datasets``). When some are missing it probes their
hosts (or the configured HTTPS proxy) with one bounded connect each; an unreachable host is a
:class:`HarnessError` naming the missing files. ``harness datasets`` runs the same cache check
without touching the network.

Candidates (``first_stage``): ``scoreddocs``, the dataset's own first-stage lists (e.g. the
official BM25 top-1000 of TREC DL), cut to ``depth`` (100); ``bm25``, the cached BM25 of
:mod:`harness.data.beir` over ``docs_iter()``; ``auto`` (default) takes scoreddocs when the
dataset has them. Scoreddocs with scores follow trec_eval order; a query whose scores are all
equal (MS MARCO's top-1000 files carry none) keeps the file's order, recorded in the notes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from harness.data.beir import BM25Config, bm25_run, build_text_dataset
from harness.data.compact import RankedRun, RunBuilder
from harness.data.formats import DataFormat
from harness.data.model import Dataset
from harness.data.trec import PathLike, passage_text
from harness.errors import HarnessError, MissingExtraError, shorten

PREFIX = "irds:"
FIRST_STAGES = ("auto", "scoreddocs", "bm25")
DEFAULT_DEPTH = 100
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class MissingFile:
    """A file the dataset needs that is not in the ir_datasets cache."""

    url: str | None  # None: a manual download (licence agreement, ...)
    hint: str


def check_ir_dataset(dataset_id: str, first_stage: str = "auto") -> None:
    """Raise unless the extra is installed and every file needed is downloaded (no network)."""
    handle = _open(dataset_id)
    missing = missing_files(_handlers(handle, _stage(handle, dataset_id, first_stage)))
    if missing:
        raise HarnessError(
            f"ir_datasets {dataset_id!r} is not downloaded yet ({_describe(missing)}); "
            "`harness run` downloads it on a machine with network access"
        )


def load_ir_dataset(
    dataset_id: str,
    *,
    name: str,
    first_stage: str = "auto",
    depth: int = DEFAULT_DEPTH,
    k1: float = 0.9,
    b: float = 0.4,
    cache_dir: PathLike | None = None,
    probe_timeout: float = PROBE_TIMEOUT_S,
) -> Dataset:
    """Load an ir_datasets id as a text-ranking dataset (see the module docstring)."""
    config = BM25Config(k1=k1, b=b, depth=depth)
    if isinstance(probe_timeout, bool) or not isinstance(probe_timeout, (int, float)):
        raise HarnessError(f"probe_timeout must be a number of seconds, got {probe_timeout!r}")
    handle = _open(dataset_id)
    stage = _stage(handle, dataset_id, first_stage)
    missing = missing_files(_handlers(handle, stage))
    _require_local_or_reachable(dataset_id, missing, probe_timeout)
    version = metadata.version("ir_datasets")
    with _irds_errors(dataset_id):
        qrels = _qrels(handle, dataset_id)
        queries = {q.query_id: _query_text(q) for q in handle.queries_iter() if q.query_id in qrels}
        if stage == "scoreddocs":
            ranked, notes = _scoreddocs(handle, set(queries), depth)
        else:
            ranked, notes = bm25_run(
                lambda: ((d.doc_id, _doc_text(d)) for d in handle.docs_iter()),
                {qid: queries[qid] for qid in qrels if qid in queries},
                corpus_key=f"ir_datasets:{dataset_id}:{version}",
                config=config,
                cache_dir=cache_dir,
            )
        wanted = ranked.doc_ids()
        found = handle.docs_store().get_many(wanted)
    docs = {doc_id: (_doc_title(doc), _doc_body(doc)) for doc_id, doc in found.items()}
    lost = sorted(wanted - set(docs))
    if lost:
        raise HarnessError(
            f"ir_datasets {dataset_id!r}: candidate doc {shorten(lost[0])} is not in its corpus"
        )
    ranked = ranked.select(queries.__contains__)
    return build_text_dataset(
        ranked,
        queries,
        docs,
        qrels,
        name=name,
        source=f"ir_datasets:{dataset_id}",
        notes={**notes, "ir_datasets_id": dataset_id, "ir_datasets_version": version},
    )


# --- opening and the cache check -------------------------------------------------------


def _open(dataset_id: str) -> Any:
    try:
        import ir_datasets
    except ImportError:
        raise MissingExtraError("ir_datasets", "ir-datasets", "an ir_datasets dataset") from None
    try:
        return ir_datasets.load(dataset_id)
    except KeyError:
        raise HarnessError(
            f"unknown ir_datasets id {dataset_id!r} (see https://ir-datasets.com)"
        ) from None


def _stage(handle: Any, dataset_id: str, first_stage: str) -> str:
    if first_stage not in FIRST_STAGES:
        raise HarnessError(f"first_stage must be one of {FIRST_STAGES}, got {first_stage!r}")
    needs = ("has_docs", "has_queries", "has_qrels")
    lacking = [n.removeprefix("has_") for n in needs if not getattr(handle, n)()]
    if lacking:
        raise HarnessError(f"ir_datasets {dataset_id!r} has no {', '.join(lacking)}")
    if first_stage == "auto":
        return "scoreddocs" if handle.has_scoreddocs() else "bm25"
    if first_stage == "scoreddocs" and not handle.has_scoreddocs():
        raise HarnessError(f"ir_datasets {dataset_id!r} has no scoreddocs; use first_stage: bm25")
    return first_stage


def _handlers(handle: Any, stage: str) -> list[Any]:
    """The components this loader reads, so unused ones need not be downloaded."""
    names = ["docs_handler", "queries_handler", "qrels_handler"]
    if stage == "scoreddocs":
        names.append("scoreddocs_handler")
    return [getattr(handle, n)() for n in names]


def missing_files(roots: Iterable[Any]) -> list[MissingFile]:
    """Downloads reachable from ``roots`` whose file, or a cached product of it, is absent.

    Walks ir_datasets' own objects: a ``Cache`` (or extracted archive) whose path exists
    covers everything beneath it; a ``Download`` is present when its cache path or a local
    mirror exists.
    """
    from ir_datasets.util.download import Download, LocalDownload
    from ir_datasets.util.fileio import Cache, TarExtractAll, ZipExtractCache

    cached_path = {Cache: "_path", ZipExtractCache: "extract_path", TarExtractAll: "_extract_path"}
    missing: list[MissingFile] = []
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            stack.extend(obj)
            continue
        if isinstance(obj, dict):
            stack.extend(obj.values())
            continue
        if not type(obj).__module__.startswith("ir_datasets") or not hasattr(obj, "__dict__"):
            continue
        attr = next((a for cls, a in cached_path.items() if isinstance(obj, cls)), None)
        if attr is not None and _exists(getattr(obj, attr, None)):
            continue
        if isinstance(obj, Download):
            local = [m for m in obj.mirrors if isinstance(m, LocalDownload)]
            if _exists(obj._cache_path) or any(_exists(m._path) for m in local):
                continue
            missing.append(_missing(obj, local))
            continue
        stack.extend(vars(obj).values())
    return missing


def _missing(download: Any, local: list[Any]) -> MissingFile:
    urls: list[str] = [
        u for m in download.mirrors if (u := getattr(m, "url", None) or getattr(m, "uri", None))
    ]
    if urls:
        return MissingFile(urls[0], urls[0])
    hint = next((m._message for m in local if getattr(m, "_message", None)), None)
    return MissingFile(None, hint or f"manual download to {local[0]._path if local else '?'}")


def _exists(path: Any) -> bool:
    from pathlib import Path

    return path is not None and str(path) != "" and Path(str(path)).exists()


def _describe(missing: list[MissingFile]) -> str:
    more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
    return f"missing {missing[0].hint}{more}"


def _require_local_or_reachable(dataset_id: str, missing: list[MissingFile], timeout: float):
    if not missing:
        return
    manual = [m for m in missing if m.url is None]
    if manual:
        raise HarnessError(f"ir_datasets {dataset_id!r} needs a manual download: {manual[0].hint}")
    hosts = {urllib.parse.urlsplit(m.url or "").netloc for m in missing}
    down = sorted(h for h in hosts if not reachable(f"https://{h}/", timeout))
    if down:
        raise HarnessError(
            f"ir_datasets {dataset_id!r} is not downloaded ({_describe(missing)}) and "
            f"{', '.join(down)} cannot be reached within {timeout:g}s (no network?); "
            "download it where there is network and copy the ir_datasets folder "
            "($IR_DATASETS_HOME, default ~/.ir_datasets) here"
        )


def reachable(url: str, timeout: float) -> bool:
    """Whether a TCP connection to ``url``'s host (or its proxy) opens within ``timeout``.

    The connect runs in a daemon thread joined with the timeout, since name resolution is not
    bounded by socket timeouts.
    """
    host, port = _endpoint(url)
    opened: list[bool] = []

    def connect() -> None:
        with contextlib.suppress(OSError):
            socket.create_connection((host, port), timeout=timeout).close()
            opened.append(True)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(opened)


def _endpoint(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return proxied.hostname or "", proxied.port or 80
    return host, parts.port or (443 if parts.scheme == "https" else 80)


@contextlib.contextmanager
def _irds_errors(dataset_id: str) -> Iterator[None]:
    """ir_datasets raises plain exceptions (network, corrupt files); show them as one line."""
    try:
        yield
    except HarnessError:
        raise
    except Exception as exc:  # a third-party library's arbitrary failures
        raise HarnessError(
            f"ir_datasets {dataset_id!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


# --- reading ---------------------------------------------------------------------------


def _qrels(handle: Any, dataset_id: str) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for row in handle.qrels_iter():
        judged = qrels.setdefault(row.query_id, {})
        previous = judged.setdefault(row.doc_id, int(row.relevance))
        if previous != int(row.relevance):
            raise HarnessError(
                f"ir_datasets {dataset_id!r}: query {shorten(row.query_id)} doc "
                f"{shorten(row.doc_id)} judged twice with different grades ({previous} and "
                f"{row.relevance})"
            )
    return qrels


def _scoreddocs(handle: Any, wanted: set[str], depth: int) -> tuple[RankedRun, dict[str, Any]]:
    lists: dict[str, dict[str, float]] = {}
    for row in handle.scoreddocs_iter():
        if row.query_id in wanted:
            lists.setdefault(row.query_id, {}).setdefault(row.doc_id, float(row.score))
    run = RunBuilder()
    scoreless = 0
    for qid, docs in lists.items():
        if len(set(docs.values())) == 1:
            scoreless += 1
            items = [(doc_id, -float(rank)) for rank, doc_id in enumerate(docs, 1)]
        else:
            items = sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)
        for doc_id, score in items[:depth]:  # the builder keeps this order (trec_eval's)
            run.add(qid, doc_id, score)
    ranked = run.build()
    return ranked, {
        "first_stage": "the dataset's scoreddocs",
        "retrieval_depth": depth,
        "queries_with_scoreless_lists": scoreless,
        "scoreless_order": "file order, first_stage_score = -rank",
    }


def _query_text(query: Any) -> str:
    text = getattr(query, "text", None)
    if not isinstance(text, str):
        text = query.default_text()
    return text.strip()


def _doc_title(doc: Any) -> str:
    title = getattr(doc, "title", "")
    return title if isinstance(title, str) else ""


def _doc_body(doc: Any) -> str:
    text = getattr(doc, "text", None)
    return text if isinstance(text, str) else doc.default_text()


def _doc_text(doc: Any) -> str:
    return passage_text(_doc_title(doc), _doc_body(doc))


def with_prefix(name: str) -> str | None:
    """The ir_datasets id in ``irds:<id>``, or None when ``name`` has no such prefix."""
    return name[len(PREFIX) :] if name.startswith(PREFIX) and len(name) > len(PREFIX) else None


FORMAT = DataFormat(
    name="ir-datasets",
    load=lambda r: load_ir_dataset(str(r.loader.get("id", "")), name=r.name, **r.options),
    options=("first_stage", "depth", "k1", "b", "cache_dir", "probe_timeout"),
    keys=("id",),
    folder=False,
    # before a load nothing is checked: the loader downloads what is missing, if it can
    check=lambda r: check_ir_dataset(str(r.loader.get("id")), r.loader.get("first_stage", "auto")),
    label="ir_datasets",
    prefix=PREFIX,
)
