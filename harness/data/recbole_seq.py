"""Sequential recommendation in the LLMRank benchmark's layout (RecBole atomic files).

Inputs (all tab-separated, UTF-8):

* a test ``.inter`` with header ``user_id:token  item_id_list:token_seq  item_id:token``: per
  user, the history (space-separated item ids, oldest first) and the held-out target item;
* an ``.item`` with ``item_id:token`` and ``title:token_seq`` (``movie_title`` in ML-1M);
* a candidate file written by a first-stage model (LLMRank's ``<name>.bm25``, ``.sasrec``,
  ``.random``, ...), no header, one line per user: ``user_id<TAB>item item ...``, best first.

What is built, per candidate-file line (in file order): a :class:`UserProfile` with the last
``history_len`` history items as titles, oldest first; the first ``num_candidates`` items as
candidates (text = title). The lists carry no scores, so ``first_stage_score = -rank`` and the
first-stage control reproduces the file's order. The target is the one relevant item (grade
1), judged even when the first stage missed it, as in the benchmark's metrics; how many users
have it among their candidates is in the notes.

``insert_target`` (off by default) applies the benchmark's has-ground-truth protocol: a user
whose target is missing gets it at a random position, seeded by ``sha256(f"{seed}\\x1f{user}")``
so it is reproducible, and the list keeps its length (the last candidate drops out). LLMRank
also shuffles the whole list; here the other candidates keep their first-stage order, since the
harness permutes orders itself. The protocol and the number of users affected are recorded in
the notes.

Files are streamed; only the users in the candidate file and the items they mention are kept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from harness.data.atomic import column_names, read_header, split_row
from harness.data.fingerprint import build_dataset
from harness.data.formats import DataFormat
from harness.data.model import Candidate, CandidateSet, Dataset, HistoryItem, UserProfile
from harness.data.trec import PathLike, iter_lines
from harness.errors import DataFormatError, HarnessError, shorten

INTER_COLUMNS = ("user_id", "item_id_list", "item_id")
TITLE_COLUMNS = ("title", "movie_title")


@dataclass(frozen=True)
class _UserRow:
    lineno: int
    history: tuple[str, ...]
    target: str


def load_recbole_seq(
    inter: PathLike,
    item: PathLike,
    candidates: PathLike,
    *,
    name: str,
    history_len: int = 50,
    num_candidates: int | None = None,
    insert_target: bool = False,
    seed: int = 0,
    drop_missing_target: bool = False,
) -> Dataset:
    """Build the sequential-recommendation dataset described in the module docstring.

    ``num_candidates`` keeps the first N of each line (LLMRank's ``recall_budget``; default:
    all); ``drop_missing_target`` drops users whose list lacks the target (after insertion).
    """
    for label, value in (("history_len", history_len), ("num_candidates", num_candidates)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise HarnessError(f"{label} must be an integer >= 1, got {value!r}")
    for label, flag in (
        ("insert_target", insert_target),
        ("drop_missing_target", drop_missing_target),
    ):
        if not isinstance(flag, bool):
            raise HarnessError(f"{label} must be true or false, got {flag!r}")

    lists = read_candidate_file(candidates)
    users = read_test_inter(inter, set(lists))
    for user, (lineno, _) in lists.items():
        if user not in users:
            raise DataFormatError(candidates, f"user {shorten(user)} is not in {inter}", lineno)
    wanted_items = {i for _, items in lists.values() for i in items}
    for row in users.values():
        wanted_items.update(row.history[-history_len:])
        wanted_items.add(row.target)
    titles = read_item_titles(item, wanted_items)
    _check_items(candidates, lists, inter, users, titles, history_len)

    sets: list[CandidateSet] = []
    qrels: dict[str, dict[str, int]] = {}
    with_target = inserted = dropped = 0
    for user, (_, items) in lists.items():
        row = users[user]
        shown = list(items[:num_candidates] if num_candidates is not None else items)
        if row.target in shown:
            with_target += 1
        elif insert_target:
            position = _seeded_position(seed, user, len(shown))
            shown = [*shown[:position], row.target, *shown[position:]][: len(shown)]
            inserted += 1
        elif drop_missing_target:
            dropped += 1
            continue
        history = tuple(HistoryItem(i, titles[i]) for i in row.history[-history_len:])
        sets.append(
            CandidateSet(
                query_id=user,
                query=UserProfile(user, history),
                candidates=tuple(
                    Candidate(i, titles[i], -float(rank), titles[i])
                    for rank, i in enumerate(shown, start=1)
                ),
            )
        )
        qrels[user] = {row.target: 1}

    return build_dataset(
        name=name,
        task="recommendation",
        sets=sets,
        qrels=qrels,
        source=f"inter={inter}; item={item}; candidates={candidates}",
        notes={
            "first_stage": f"candidate file {Path(candidates).name} (file order)",
            "users_in_candidate_file": len(lists),
            "users_with_target_in_candidates": with_target,
            "target_in_candidates_rate": round(with_target / len(lists), 4) if lists else 0.0,
            "insert_target": insert_target,
            "users_with_target_inserted": inserted,
            "insert_protocol": (
                "missing target inserted at position sha256(f'{seed}\\x1f{user}') mod list "
                "length; last candidate dropped; others keep first-stage order"
                if insert_target
                else "off"
            ),
            "seed": seed,
            "users_dropped_missing_target": dropped,
            "history_len": history_len,
            "num_candidates": num_candidates,
            "relevance": "the held-out target item is the one relevant item (grade 1)",
        },
    )


def read_candidate_file(path: PathLike) -> dict[str, tuple[int, tuple[str, ...]]]:
    """``user_id<TAB>item item ...`` per line: user -> (line number, items best first)."""
    lists: dict[str, tuple[int, tuple[str, ...]]] = {}
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        user, sep, rest = line.partition("\t")
        user, items = user.strip(), tuple(rest.split())
        if not sep or not user:
            raise DataFormatError(path, "expected 'user_id<TAB>space-separated item ids'", lineno)
        if not items:
            raise DataFormatError(path, f"user {shorten(user)} has no candidates", lineno)
        if len(set(items)) != len(items):
            twice = next(i for i in items if items.count(i) > 1)
            raise DataFormatError(
                path, f"user {shorten(user)} lists item {shorten(twice)} twice", lineno
            )
        if user in lists:
            raise DataFormatError(path, f"user {shorten(user)} listed twice", lineno)
        lists[user] = (lineno, items)
    if not lists:
        raise DataFormatError(path, "no candidate lists")
    return lists


def read_test_inter(path: PathLike, wanted: set[str] | None = None) -> dict[str, _UserRow]:
    """Read a RecBole sequential ``.inter``: user -> (line, history oldest first, target)."""
    lines = iter_lines(path)
    idx = read_header(path, lines, INTER_COLUMNS)
    rows: dict[str, _UserRow] = {}
    for lineno, line in lines:
        if not line.strip():
            continue
        parts = split_row(path, line, lineno, idx)
        user = parts[idx["user_id"]].strip()
        if wanted is not None and user not in wanted:
            continue
        target = parts[idx["item_id"]].strip()
        if not user or not target:
            raise DataFormatError(path, "empty user_id or item_id", lineno)
        if user in rows:
            raise DataFormatError(path, f"user {shorten(user)} listed twice", lineno)
        rows[user] = _UserRow(lineno, tuple(parts[idx["item_id_list"]].split()), target)
    return rows


def read_item_titles(path: PathLike, wanted: set[str] | None = None) -> dict[str, str]:
    """Read a RecBole ``.item``: item id -> title (``title`` or ``movie_title`` column), its
    spaces kept as LLMRank keeps them."""
    lines = iter_lines(path)
    first = next(lines, None)
    if first is None:
        raise DataFormatError(path, "empty file, expected a header line", 1)
    columns = column_names(first[1])
    title = next((c for c in TITLE_COLUMNS if c in columns), None)
    if "item_id" not in columns or title is None:
        raise DataFormatError(path, "header needs item_id and title (or movie_title)", first[0])
    idx = {"item_id": columns.index("item_id"), "title": columns.index(title)}
    titles: dict[str, str] = {}
    for lineno, line in lines:
        if not line.strip():
            continue
        parts = split_row(path, line, lineno, idx)
        item = parts[idx["item_id"]].strip()
        if wanted is not None and item not in wanted:
            continue
        text = _title_as_llmrank_reads_it(line, idx["title"])
        if not text.strip():
            raise DataFormatError(path, f"item {shorten(item)} has an empty title", lineno)
        if item in titles:
            raise DataFormatError(path, f"item {shorten(item)} listed twice", lineno)
        titles[item] = text
    return titles


def _title_as_llmrank_reads_it(line: str, column: int) -> str:
    """The title field as LLMRank's ``line.strip().split("\\t")`` leaves it: the line's two ends
    trimmed, the title's own spaces kept (320 Games-6k titles start with a space, which its
    prompts show)."""
    fields = line.strip().split("\t")
    return fields[column] if column < len(fields) else ""


def _check_items(
    candidates: PathLike,
    lists: dict[str, tuple[int, tuple[str, ...]]],
    inter: PathLike,
    users: dict[str, _UserRow],
    titles: dict[str, str],
    history_len: int,
) -> None:
    """Every candidate, history and target item must have a title; errors name file:line."""
    for user, (lineno, items) in lists.items():
        missing = next((i for i in items if i not in titles), None)
        if missing is not None:
            raise DataFormatError(
                candidates, f"item {shorten(missing)} is not in the .item file", lineno
            )
        row = users[user]
        for i in (*row.history[-history_len:], row.target):
            if i not in titles:
                raise DataFormatError(
                    inter, f"item {shorten(i)} is not in the .item file", row.lineno
                )


def _seeded_position(seed: int, user: str, size: int) -> int:
    digest = hashlib.sha256(f"{seed}\x1f{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % size


FORMAT = DataFormat(
    name="recbole-seq",
    load=lambda r: load_recbole_seq(
        r.files["inter"], r.files["item"], r.files["candidates"], name=r.name, **r.options
    ),
    options=("history_len", "num_candidates", "insert_target", "seed", "drop_missing_target"),
    files=("inter", "item", "candidates"),
)
