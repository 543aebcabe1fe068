"""Small filesystem helpers shared across layers: the user cache folder, atomic writes and
reading a JSON object with a one-line error."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness.errors import HarnessError


def user_cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/harness/...`` (default ``~/.cache/harness/...``); not created here."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base, "harness", *parts)


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see half a
    file and an interrupted write leaves the previous version intact."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
