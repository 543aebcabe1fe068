"""User-facing errors: each renders as one line that says what is wrong and where."""

from __future__ import annotations

from pathlib import Path

ECHO_LIMIT = 200  # characters of a value from the user's data an error message repeats


def shorten(value: object, *, quote: bool = False, limit: int = ECHO_LIMIT) -> str:
    """``value`` as an error message repeats it: whole up to ``limit`` characters, else its
    first ``limit`` and its length, so that a 100 MB doc id in a data file makes a one-line
    error rather than a 100 MB one. ``quote`` shows it as ``{value!r}`` would."""
    text = value if isinstance(value, str) else repr(value) if quote else str(value)
    quote = quote and isinstance(value, str)
    if len(text) <= limit:
        return repr(text) if quote else text
    head = text[:limit]
    return f"{repr(head) if quote else head}… ({len(text):,} characters)"


class HarnessError(Exception):
    """An error caused by the user's input or environment, shown without a traceback."""

    exit_code = 2


class DataFormatError(HarnessError):
    """A malformed input file, located by path and (where it applies) 1-based line number."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class MissingExtraError(HarnessError):
    """An optional dependency is not installed; names the extra that provides it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the '{package}' package: pip install 'harness-rerank[{extra}]'"
        )
