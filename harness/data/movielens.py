"""MovieLens-100K as a recommendation reranking benchmark: the project's embedded default.

The ratings ship inside the ``recbole`` wheel (``recbole/dataset_example/ml-100k/``); MovieLens
terms forbid redistribution, so the files are read from the installed wheel (located with
``importlib.util.find_spec``, without importing recbole) and never copied into the project.

Protocol (the defaults are the dataset card's):

1. Split. Each user's interactions are sorted chronologically (timestamp, then item id). The
   last ``test_size`` (10) are held out; the ``history_len`` (10) just before them form the
   user's profile, oldest first (title, year, genres, rating). Users with no interaction
   before the held-out ones are dropped (none in ML-100K, where every user has >= 20).
2. First stage, built here: item-item cosine co-occurrence over the training part (every
   user's non-held-out interactions, as a binary user x item matrix). A candidate's score is
   the sum of its cosine similarities to the user's history items, rounded to 6 decimals so
   that floating-point noise cannot reorder lists. Items the user interacted with in training
   are excluded. Ties (including the zero-score tail) break by training popularity, then
   item id, so lists are deterministic. The top ``num_candidates`` (20) are kept, best first.
3. Judgments. Held-out items rated >= 4 are relevant with grade rating - 3 (4 -> 1, 5 -> 2);
   held-out items rated < 4 get grade 0 (judged non-relevant). All held-out items are
   judged, including those the first stage missed, as in TREC qrels.
4. Users with no relevant item among their candidates are dropped (a reranker cannot change
   their metrics) and counted in ``notes``.

Query ids are user ids (strings), sets ordered by integer user id; doc ids are item ids.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from harness.data.atomic import read_header, split_row
from harness.data.fingerprint import build_dataset
from harness.data.formats import DataFormat
from harness.data.model import Candidate, CandidateSet, Dataset, HistoryItem, UserProfile
from harness.data.trec import PathLike, iter_lines
from harness.errors import DataFormatError, HarnessError, shorten

INSTALL_HINT = "pip install --no-deps recbole==1.2.1"
FIRST_STAGE = "item co-occurrence (cosine) over training interactions"
SCORE_DECIMALS = 6
RELEVANT_MIN_RATING = 4


@dataclass(frozen=True)
class Movie:
    """Item metadata from the ``.item`` file."""

    title: str
    year: int | None
    genres: tuple[str, ...]

    @property
    def text(self) -> str:
        """What a reranker reads: "Title (1995) — Genre, Genre"."""
        head = f"{self.title} ({self.year})" if self.year is not None else self.title
        return f"{head} — {', '.join(self.genres)}" if self.genres else head

    @property
    def fields(self) -> dict[str, object]:
        return {"year": self.year, "genres": self.genres}


@dataclass(frozen=True)
class Interactions:
    """All ratings as parallel arrays, sorted by (user, timestamp, item)."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray


def movielens_files(data_dir: PathLike | None = None) -> tuple[Path, Path]:
    """``(ml-100k.inter, ml-100k.item)`` paths, by default inside the installed recbole wheel.

    Raises :class:`HarnessError` with the install command when recbole is absent, or naming
    the missing file; reads nothing else, so it doubles as an availability check.
    """
    if data_dir is None:
        spec = importlib.util.find_spec("recbole")
        if spec is None or not spec.submodule_search_locations:
            raise HarnessError(
                "MovieLens-100K is read from the recbole wheel, which is not installed: "
                + INSTALL_HINT
            )
        package = Path(next(iter(spec.submodule_search_locations)))
        data_dir = package / "dataset_example" / "ml-100k"
    files = Path(data_dir) / "ml-100k.inter", Path(data_dir) / "ml-100k.item"
    for path in files:
        if not path.is_file():
            raise HarnessError(f"MovieLens-100K file not found: {path}")
    return files


def load_movielens_100k(
    *,
    name: str = "movielens-100k",
    history_len: int = 10,
    test_size: int = 10,
    num_candidates: int = 20,
    data_dir: PathLike | None = None,
) -> Dataset:
    """Build the MovieLens-100K reranking dataset (protocol in the module docstring).

    ``data_dir`` overrides the folder holding ``ml-100k.inter`` and ``ml-100k.item``
    (default: the recbole wheel's copy).
    """
    for label, value in (
        ("history_len", history_len),
        ("test_size", test_size),
        ("num_candidates", num_candidates),
    ):
        if value < 1:
            raise HarnessError(f"{label} must be at least 1, got {value}")
    inter_path, item_path = movielens_files(data_dir)
    movies = read_items(item_path)
    data = read_interactions(inter_path, movies)

    item_ids = np.array(sorted(movies), dtype=np.int64)
    col = np.searchsorted(item_ids, data.items)
    user_ids, starts, counts = np.unique(data.users, return_index=True, return_counts=True)
    row = np.repeat(np.arange(len(user_ids)), counts)
    pos = np.arange(len(data.users)) - starts[row]
    n_train = counts - test_size
    held_out = pos >= n_train[row]
    in_history = ~held_out & (pos >= n_train[row] - history_len)

    shape = (len(user_ids), len(item_ids))
    train = _binary_matrix(row[~held_out], col[~held_out], shape)
    history = _binary_matrix(row[in_history], col[in_history], shape)
    scores, top = _first_stage(train, history, item_ids, num_candidates)

    sets: list[CandidateSet] = []
    qrels: dict[str, dict[str, int]] = {}
    too_few = no_positive = relevant_total = 0
    for u, user in enumerate(user_ids.tolist()):
        if n_train[u] < 1:
            too_few += 1
            continue
        rows = slice(starts[u], starts[u] + counts[u])
        judged = _judgments(data.items[rows][held_out[rows]], data.ratings[rows][held_out[rows]])
        picks = [i for i in top[u].tolist() if scores[u, i] > -np.inf]
        relevant = sum(1 for i in picks if judged.get(str(item_ids[i]), 0) > 0)
        if relevant == 0:
            no_positive += 1
            continue
        relevant_total += relevant
        qid = str(user)
        qrels[qid] = judged
        sets.append(
            CandidateSet(
                query_id=qid,
                query=UserProfile(qid, tuple(_history(data, rows, in_history[rows], movies))),
                candidates=tuple(
                    _candidate(int(item_ids[i]), float(scores[u, i]), movies) for i in picks
                ),
            )
        )

    kept = tuple(sets)
    return build_dataset(
        name=name,
        task="recommendation",
        sets=kept,
        qrels=qrels,
        source=f"inter={inter_path}; item={item_path}",
        notes={
            "users_total": len(user_ids),
            "users_kept": len(kept),
            "users_dropped_no_positive_candidate": no_positive,
            "users_dropped_too_few_interactions": too_few,
            "relevant_candidates_per_user_mean": round(relevant_total / len(kept), 4)
            if kept
            else 0.0,
            "first_stage": FIRST_STAGE,
            "split": "per user chronological (timestamp, item id); last test_size held out",
            "relevance": "held-out rating >= 4 -> grade rating - 3; held-out rating < 4 -> 0",
            "history_len": history_len,
            "test_size": test_size,
            "num_candidates": num_candidates,
        },
    )


def read_items(path: Path) -> dict[int, Movie]:
    """Read ``ml-100k.item``: item id -> title, release year (None if not a year), genres."""
    movies: dict[int, Movie] = {}
    lines = iter_lines(path)
    idx = read_header(path, lines, ("item_id", "movie_title", "release_year", "class"))
    for lineno, line in lines:
        if not line.strip():
            continue
        parts = split_row(path, line, lineno, idx)
        item = _int(path, parts[idx["item_id"]], "item_id", lineno)
        if item in movies:
            raise DataFormatError(path, f"item {item} listed twice", lineno)
        year = parts[idx["release_year"]].strip()
        movies[item] = Movie(
            title=parts[idx["movie_title"]].strip(),
            year=int(year) if len(year) == 4 and year.isdigit() else None,
            genres=tuple(parts[idx["class"]].split()),
        )
    return movies


def read_interactions(path: Path, movies: dict[int, Movie]) -> Interactions:
    """Read ``ml-100k.inter`` and sort it by (user, timestamp, item)."""
    users: list[int] = []
    items: list[int] = []
    ratings: list[float] = []
    stamps: list[float] = []
    lines = iter_lines(path)
    idx = read_header(path, lines, ("user_id", "item_id", "rating", "timestamp"))
    for lineno, line in lines:
        if not line.strip():
            continue
        parts = split_row(path, line, lineno, idx)
        item = _int(path, parts[idx["item_id"]], "item_id", lineno)
        if item not in movies:
            raise DataFormatError(path, f"item {item} is not in ml-100k.item", lineno)
        users.append(_int(path, parts[idx["user_id"]], "user_id", lineno))
        items.append(item)
        ratings.append(_float(path, parts[idx["rating"]], "rating", lineno))
        stamps.append(_float(path, parts[idx["timestamp"]], "timestamp", lineno))
    if not users:
        raise DataFormatError(path, "no interactions")
    arrays = (
        np.array(users, dtype=np.int64),
        np.array(items, dtype=np.int64),
        np.array(ratings, dtype=np.float64),
        np.array(stamps, dtype=np.float64),
    )
    order = np.lexsort((arrays[1], arrays[3], arrays[0]))
    return Interactions(*(a[order] for a in arrays))


def _binary_matrix(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sparse.csr_matrix:
    matrix = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _first_stage(
    train: sparse.csr_matrix, history: sparse.csr_matrix, item_ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(user x item scores, -inf on training items; each user's top-k item columns, best first).

    Ties break by training popularity (desc), then item id, via one global tie rank.
    """
    popularity = np.asarray(train.sum(axis=0)).ravel()
    scores = np.round(history @ _cosine(train, popularity), SCORE_DECIMALS)
    scores[train.nonzero()] = -np.inf
    tie_rank = np.empty(len(item_ids), dtype=np.int64)
    tie_rank[np.lexsort((item_ids, -popularity))] = np.arange(len(item_ids))
    top = np.lexsort((np.broadcast_to(tie_rank, scores.shape), -scores))[:, :k]
    return scores, top


def _cosine(train: sparse.csr_matrix, popularity: np.ndarray) -> np.ndarray:
    """Dense item-item cosine of the binary training matrix, zero diagonal and unseen items."""
    co = (train.T @ train).toarray()
    norm = np.sqrt(popularity.astype(np.float64))
    denom = np.outer(norm, norm)
    cosine = np.divide(co, denom, out=np.zeros_like(co), where=denom > 0)
    np.fill_diagonal(cosine, 0.0)
    return cosine


def _judgments(items: np.ndarray, ratings: np.ndarray) -> dict[str, int]:
    """Held-out item -> grade; a re-rated item keeps its latest rating (arrays in time order)."""
    return {
        str(item): int(rating) - 3 if rating >= RELEVANT_MIN_RATING else 0
        for item, rating in zip(items.tolist(), ratings.tolist(), strict=True)
    }


def _history(
    data: Interactions, rows: slice, mask: np.ndarray, movies: dict[int, Movie]
) -> Iterator[HistoryItem]:
    items, ratings = data.items[rows][mask].tolist(), data.ratings[rows][mask].tolist()
    for item, rating in zip(items, ratings, strict=True):
        movie = movies[item]
        yield HistoryItem(str(item), movie.title, rating, movie.fields)


def _candidate(item: int, score: float, movies: dict[int, Movie]) -> Candidate:
    movie = movies[item]
    return Candidate(str(item), movie.text, score, movie.title, movie.fields)


def _int(path: Path, text: str, label: str, lineno: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataFormatError(
            path, f"{label} {shorten(text, quote=True)} is not an integer", lineno
        ) from None


def _float(path: Path, text: str, label: str, lineno: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataFormatError(
            path, f"{label} {shorten(text, quote=True)} is not a number", lineno
        ) from None
    if not math.isfinite(value):
        raise DataFormatError(path, f"{label} {shorten(text, quote=True)} is not finite", lineno)
    return value


def _located(data_dir: PathLike | None) -> dict[str, Path]:
    """Check the files exist; the loader finds them again from its ``data_dir`` option."""
    movielens_files(data_dir)
    return {}


FORMAT = DataFormat(
    name="movielens-100k",
    load=lambda r: load_movielens_100k(name=r.name, **r.options),
    options=("history_len", "test_size", "num_candidates", "data_dir"),
    folder=False,
    locate=lambda r: _located(r.options.get("data_dir")),
)
