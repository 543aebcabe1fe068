"""Locate the bundled preset folders (reranker presets, dataset cards) and read YAML.

In a source checkout they are the top-level ``rerankers/`` and ``datasets/`` folders; a built
wheel carries copies under ``harness/_bundled/`` (see ``pyproject.toml``), so a non-editable
install finds them too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import HarnessError

_PACKAGE_DIR = Path(__file__).resolve().parent


def preset_dir(kind: str) -> Path:
    """Folder holding bundled presets of ``kind`` ("rerankers", "datasets", "templates" or
    "suites")."""
    bundled = _PACKAGE_DIR / "_bundled" / kind
    if bundled.is_dir():
        return bundled
    return _PACKAGE_DIR.parent / kind


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, turning syntax errors into a one-line error with the location."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HarnessError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise HarnessError(f"{where}: {problem}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: expected a YAML mapping at the top level")
    return data
