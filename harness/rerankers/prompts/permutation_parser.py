"""Turn a RankGPT-style answer (``[3] > [1] > [2]``) into a permutation, repairing and recording.

The repair rules are the ones users of the existing toolkits rely on, applied in this order:

1. drop everything up to and including the last ``</think>`` (reasoning models think first);
2. map look-alike digits to ASCII: every Unicode character with a digit value (fullwidth,
   Arabic-Indic, Devanagari, superscript, subscript, circled and dingbat digits such as
   ``²``, ``₃``, ``④``, ``❺``), a superset of the table rank_llm applies;
3. keep the numbers, in the order they appear, and make them 0-based;
4. drop out-of-range numbers and repeated ones (the first mention wins);
5. append the identifiers the answer never named, in the order they were shown.

Every repair is recorded, and the call gets one status — the most severe that applies:

* ``wrong_format``: the answer is not exactly ``[i] > [j] > ...`` (empty, prose around the
  list, no brackets, look-alike digits, or an identifier that is not in the window);
* ``repetition``: otherwise well-formed, but an identifier appears more than once;
* ``missing``: otherwise well-formed, but some identifiers were never named;
* ``ok``: a clean permutation of all identifiers.

Parse failures are part of order sensitivity: a model may answer cleanly for one order of a
list and ramble for another, and the repaired ranking then leans on the input order (step 5).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from harness.rerankers.base import ParseStatus

THINK_END = "</think>"
STRICT_FORMAT = re.compile(r"\s*\[[0-9]+\](?:\s*>\s*\[[0-9]+\])*\s*")
NUMBER = re.compile(r"[0-9]+")
SEVERITY: tuple[ParseStatus, ...] = ("ok", "missing", "repetition", "wrong_format")


@dataclass(frozen=True)
class ParsedPermutation:
    """A repaired permutation of ``range(size)`` (best first) and what the repair took."""

    permutation: tuple[int, ...]
    status: ParseStatus
    named: int  # distinct in-range identifiers the answer named, in its own order
    duplicates: int
    out_of_range: int
    missing: int
    look_alike_digits: bool
    strict_format: bool

    @property
    def repairs(self) -> dict[str, int]:
        """Non-zero repair counts, for the call's ``extra``."""
        counts = {
            "duplicates": self.duplicates,
            "out_of_range": self.out_of_range,
            "missing": self.missing,
            "look_alike_digits": int(self.look_alike_digits),
            "not_strict_format": int(not self.strict_format),
        }
        return {name: count for name, count in counts.items() if count}


def parse_permutation(text: str, size: int) -> ParsedPermutation:
    """Parse an answer about ``size`` candidates shown as ``[1]`` ... ``[size]``."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    answer = text.rsplit(THINK_END, 1)[-1]
    ascii_answer = ascii_digits(answer)
    look_alike = ascii_answer != answer
    strict = STRICT_FORMAT.fullmatch(ascii_answer) is not None

    seen: dict[int, None] = {}
    duplicates = out_of_range = 0
    for match in NUMBER.finditer(ascii_answer):
        digits = match.group().lstrip("0") or "0"
        # Longer than any identifier: out of range, and never handed to int() (Python refuses
        # to convert more than 4,300 digits).
        index = int(digits) - 1 if len(digits) <= len(str(size)) else size
        if not 0 <= index < size:
            out_of_range += 1
        elif index in seen:
            duplicates += 1
        else:
            seen[index] = None
    named = len(seen)
    permutation = (*seen, *(i for i in range(size) if i not in seen))

    if look_alike or not strict or out_of_range or named == 0:
        status: ParseStatus = "wrong_format"
    elif duplicates:
        status = "repetition"
    elif named < size:
        status = "missing"
    else:
        status = "ok"
    return ParsedPermutation(
        permutation=permutation,
        status=status,
        named=named,
        duplicates=duplicates,
        out_of_range=out_of_range,
        missing=size - named,
        look_alike_digits=look_alike,
        strict_format=strict,
    )


def ascii_digits(text: str) -> str:
    """Replace every non-ASCII character that has a digit value by its ASCII digit."""
    return "".join(ch if ch.isascii() else _ascii_digit(ch) for ch in text)


def _ascii_digit(ch: str) -> str:
    value = unicodedata.digit(ch, None)
    return ch if value is None else str(value)


def worst_status(statuses: list[ParseStatus] | tuple[ParseStatus, ...]) -> ParseStatus:
    """The most severe of several calls' statuses (``ok`` < ``missing`` < ``repetition`` <
    ``wrong_format``); ``not_applicable`` when there were none."""
    ranked = [s for s in statuses if s in SEVERITY]
    if not ranked:
        return "not_applicable"
    return max(ranked, key=SEVERITY.index)
