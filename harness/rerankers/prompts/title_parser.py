"""Turn an LLMRank-style answer (ranked titles, one per line) into a permutation, as LLMRank does.

LLMRank (RUCAIBox/LLMRank, ``llmrank/model/rank.py``, ``parsing_output_text``) asks for titles
and matches each answer line back to a candidate by string similarity. Its rule, reproduced
here line for line:

1. split the answer on ``"\\n"``; skip empty lines and lines ending in ``candidate movies:``;
2. a line ``"N. name"`` whose text before the first ``". "`` is digits (``str.isdigit``) names
   ``name``, any other line names itself (as in LLMRank, a line with no ``". "`` tests all
   but its last character, so ``"12"`` names ``"2"``);
3. the name matches the first candidate, in the shown order, whose title (stripped, HTML
   entities unescaped) contains it, is contained in it, or shares a longest common
   subsequence with it longer than 0.9 times the title's length (``pylcs``, counted in
   characters);
4. a line whose first match was already named is dropped (it never falls through to another
   candidate), as is a line matching nothing; a second candidate with the same title can
   therefore never be named;
5. LLMRank scores the named candidates ``recall_budget - k`` in answer order and leaves every
   other candidate at ``-10000``, tied with every item of the catalog.

The harness needs a full ranking, so the candidates never named follow the named ones in
doc-id order: the harness's rule for tied scores, which keeps the shown order out of them, as
LLMRank's tie (broken by item index over the catalog) keeps it out too.

Every answer gets one status, the most severe that applies (the vocabulary of
:mod:`permutation_parser`):

* ``wrong_format``: no candidate named, or a non-empty line that names none (prose, a header,
  an invented title); LLMRank's prompt asks for reasoning too, so a faithful answer may well
  be graded so;
* ``repetition``: every line names a candidate, but one is named again (that line dropped);
* ``missing``: a clean list, but some candidates are never named;
* ``ok``: every candidate named exactly once and nothing else.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from harness.rerankers.base import ParseStatus

HEADER_SUFFIX = "candidate movies:"  # lines LLMRank skips
SIMILARITY = 0.9  # LLMRank: lcs(name, title) > 0.9 * len(title)


@dataclass(frozen=True)
class ParsedTitles:
    """A permutation of the shown candidates (best first) and how the answer was read."""

    permutation: tuple[int, ...]
    status: ParseStatus
    named: int  # candidates the answer named: those LLMRank scores above -10000
    fuzzy: int  # of them, named by containment or similarity rather than the exact title
    duplicates: int  # lines whose match was already named (dropped)
    unmatched: int  # non-empty lines that named no candidate (prose, invented titles)
    headers: int  # lines ending in "candidate movies:" (skipped)
    missing: int  # candidates never named (placed after the named ones, by doc id)

    @property
    def repairs(self) -> dict[str, int]:
        """Non-zero counts, for the call's ``extra``."""
        counts = {
            "fuzzy": self.fuzzy,
            "duplicates": self.duplicates,
            "unmatched_lines": self.unmatched,
            "header_lines": self.headers,
            "missing": self.missing,
        }
        return {name: count for name, count in counts.items() if count}


def parse_titles(answer: str, titles: Sequence[str], doc_ids: Sequence[str]) -> ParsedTitles:
    """Read ``answer`` about the candidates ``titles`` (shown order, raw as the prompt shows
    them); ``doc_ids`` order the candidates never named."""
    if not titles or len(titles) != len(doc_ids):
        raise ValueError(f"need one doc id per title, got {len(titles)} and {len(doc_ids)}")
    cleaned = [html.unescape(title.strip()) for title in titles]
    named: dict[int, None] = {}
    named_titles: set[str] = set()
    fuzzy = duplicates = unmatched = headers = 0
    for line in answer.split("\n"):
        if len(line) < 1:
            continue
        if line.endswith(HEADER_SUFFIX):
            headers += 1
            continue
        name = answer_name(line)
        position = first_match(name, cleaned)
        if position is None:
            unmatched += 1
        elif titles[position] in named_titles:
            duplicates += 1
        else:
            named[position] = None
            named_titles.add(titles[position])
            fuzzy += int(cleaned[position] != name)
    rest = sorted((i for i in range(len(titles)) if i not in named), key=lambda i: doc_ids[i])
    if unmatched or headers or not named:
        status: ParseStatus = "wrong_format"
    elif duplicates:
        status = "repetition"
    elif rest:
        status = "missing"
    else:
        status = "ok"
    return ParsedTitles(
        permutation=(*named, *rest),
        status=status,
        named=len(named),
        fuzzy=fuzzy,
        duplicates=duplicates,
        unmatched=unmatched,
        headers=headers,
        missing=len(rest),
    )


def answer_name(line: str) -> str:
    """The title a line names: the text after ``"N. "``, else the whole line (LLMRank's slice,
    quirk included: with no ``". "`` it tests ``line[:-1]`` and keeps ``line[1:]``)."""
    cut = line.find(". ")
    return line[cut + 2 :] if line[:cut].isdigit() else line


def first_match(name: str, cleaned: Sequence[str]) -> int | None:
    """The first candidate (shown order) that ``name`` matches under LLMRank's rule."""
    for position, title in enumerate(cleaned):
        if title in name or name in title:
            return position
        limit = SIMILARITY * len(title)
        # lcs <= len(name): a name no longer than the limit cannot pass, so skip the lcs
        if len(name) > limit and lcs_length(name, title) > limit:
            return position
    return None


def lcs_length(a: str, b: str) -> int:
    """Length of the longest common subsequence of two strings, in characters (what
    ``pylcs.lcs_sequence_length`` counts), by the bit-parallel row update of Allison and Dix."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, char in enumerate(a):
        masks[char] = masks.get(char, 0) | 1 << i
    full = (1 << len(a)) - 1
    row = full
    for char in b:
        match = row & masks.get(char, 0)
        row = ((row + match) | (row - match)) & full
    return len(a) - row.bit_count()
