"""Small filesystem helpers shared across layers: the user cache folder, atomic writes and
reading a JSON object with a one-line error."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
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
