"""Small filesystem helpers shared across layers: the user cache folder, atomic writes,
readable-and-compact JSON, and reading a JSON object with a one-line error."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from harness.errors import HarnessError


def user_cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/harness/...`` (default ``~/.cache/harness/...``); not created here."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base, "harness", *parts)


def write_text_atomic(path: Path, text: str | Iterable[str]) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see half a
    file and an interrupted write leaves the previous version intact. A path that is a folder,
    or a folder that cannot be written, is one HarnessError, with no temporary file left.
    ``text`` may be an iterable of pieces (a JSON encoder's), written as they come."""
    if path.is_dir():
        raise HarnessError(f"{path}: is a folder, expected a file path")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.writelines([text] if isinstance(text, str) else text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise HarnessError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    except BaseException:  # the pieces failed (a value JSON cannot encode), or Ctrl-C
        tmp.unlink(missing_ok=True)
        raise


def dumps_json(
    value: Any,
    indent: int = 2,
    *,
    item_separator: str = ",",
    default: Callable[[Any], Any] | None = None,
    allow_nan: bool = True,
) -> str:
    """:func:`iter_json` joined into one string."""
    return "".join(
        iter_json(
            value, indent, item_separator=item_separator, default=default, allow_nan=allow_nan
        )
    )


def iter_json(
    value: Any,
    indent: int = 2,
    *,
    item_separator: str = ",",
    default: Callable[[Any], Any] | None = None,
    allow_nan: bool = True,
) -> Iterator[str]:
    """JSON indented like ``json.dumps(value, indent=indent)``, except that a list of scalars
    is written on one line (a list of such lists, e.g. a matrix, one row per line): per-query
    vectors and count matrices stay readable in a diff without one line per number. Yielded
    in pieces, so a large file is written without ever being one string in memory;
    ``json.loads`` of the joined pieces gives exactly what it gives for ``json.dumps(value)``."""
    separators = (item_separator, ": " if item_separator.endswith(" ") else ":")

    def leaf(x: Any) -> str:
        return json.dumps(x, default=default, allow_nan=allow_nan, separators=separators)

    def render(x: Any, level: int) -> Iterator[str]:
        pad, inner = " " * (indent * level), " " * (indent * (level + 1))
        if isinstance(x, Mapping) and x:
            yield "{\n"
            for i, (k, v) in enumerate(x.items()):
                key = json.dumps(k if isinstance(k, str) else leaf(k))
                yield f",\n{inner}{key}: " if i else f"{inner}{key}: "
                yield from render(v, level + 1)
            yield f"\n{pad}}}"
        elif isinstance(x, list | tuple) and not all(_is_scalar(v) for v in x):
            yield "[\n"
            for i, v in enumerate(x):
                yield f",\n{inner}" if i else inner
                yield from render(v, level + 1)
            yield f"\n{pad}]"
        else:
            yield leaf(x)

    yield from render(value, 0)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float)


def ensure_writable_folder(folder: Path, what: str) -> None:
    """Create ``folder`` (and parents) and prove a file can be written there, before any long
    work whose output would go there; HarnessError naming ``what`` and the reason otherwise."""
    probe = folder / f".harness-write-check.{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        raise HarnessError(f"cannot write {what} in {folder}: {exc.strerror or exc}") from exc


def os_error_line(exc: OSError) -> str:
    """One line for an OSError from the filesystem: the path, then the system's reason."""
    where = exc.filename if exc.filename is not None else "file system"
    reason = exc.strerror or str(exc)
    if exc.filename2 is not None:
        return f"{where} -> {exc.filename2}: {reason}"
    return f"{where}: {reason}"


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON file that must hold one object; HarnessError naming the file and ``what`` it
    should be when it cannot be read, does not parse or holds something else."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise HarnessError(f"{path}: cannot read {what} ({exc})") from exc
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: not a {what} (expected a JSON object)")
    return data
