"""MovieLens-100K reranking benchmark: protocol on a tiny fixture, then the real wheel data."""

from __future__ import annotations

import importlib.util
import math
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from harness.data.model import Dataset, UserProfile
from harness.data.movielens import load_movielens_100k, movielens_files, read_items
from harness.errors import DataFormatError, HarnessError

ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
MOVIES = {
    1: ("Toy Story", "1995", "Animation Children's Comedy"),
    2: ("GoldenEye", "1995", "Action Adventure Thriller"),
    3: ("Four Rooms", "1995", "Thriller"),
    4: ("Get Shorty", "1995", "Action Comedy Drama"),
    5: ("Copycat", "1995", "Crime Drama Thriller"),
    6: ("Twelve Monkeys", "1995", "Drama Sci-Fi"),
    7: ("Babe", "1995", "Children's Comedy Drama"),
    8: ("unknown", "unknown", "unknown"),
}
# (user, item, rating, timestamp); user 10 has a timestamp tie (items 3 and 1 at t=100)
INTERACTIONS = [
    (10, 3, 4, 100), (10, 1, 5, 100), (10, 2, 3, 200), (10, 4, 5, 300), (10, 6, 4, 400),
    (10, 7, 1, 500),
    (2, 1, 4, 1), (2, 2, 4, 2), (2, 6, 5, 3), (2, 5, 4, 4), (2, 8, 2, 5),
    (3, 4, 3, 1), (3, 6, 3, 2), (3, 2, 3, 3), (3, 3, 5, 4), (3, 1, 5, 5),
    (4, 7, 5, 1), (4, 8, 5, 2), (4, 5, 5, 3),
    (5, 1, 5, 1),
]  # fmt: skip
PARAMS = {"history_len": 2, "test_size": 2, "num_candidates": 3}


def write_ml(folder: Path, interactions=INTERACTIONS, extra_inter: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    items = "".join(f"{i}\t{t}\t{y}\t{g}\n" for i, (t, y, g) in MOVIES.items())
    (folder / "ml-100k.item").write_text(ITEM_HEADER + items, encoding="utf-8")
    rows = "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in interactions)
    (folder / "ml-100k.inter").write_text(INTER_HEADER + rows + extra_inter, encoding="utf-8")
    return folder


def reference(interactions, *, history_len: int, test_size: int, num_candidates: int):
    """The protocol written out naively: user -> (history, candidates, scores, judgments)."""
    by_user: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for user, item, rating, stamp in interactions:
        by_user[user].append((stamp, item, rating))
    train: dict[int, set[int]] = {}
    split = {}
    for user, rows in by_user.items():
        rows.sort()
        if len(rows) <= test_size:
            continue
        train[user] = {i for _, i, _ in rows[:-test_size]}
        history = [i for _, i, _ in rows[:-test_size][-history_len:]]
        judged = {i: (r - 3 if r >= 4 else 0) for _, i, r in rows[-test_size:]}
        split[user] = (history, judged)
    pop = Counter(i for items in train.values() for i in items)

    def cos(a: int, b: int) -> float:
        co = sum(1 for items in train.values() if a in items and b in items)
        return co / math.sqrt(pop[a] * pop[b]) if co else 0.0

    out = {}
    for user in sorted(split):
        history, judged = split[user]
        scores = {
            i: round(sum(cos(h, i) for h in history), 6) for i in MOVIES if i not in train[user]
        }
        ranked = sorted(scores, key=lambda i: (-scores[i], -pop[i], i))[:num_candidates]
        out[user] = (history, ranked, [scores[i] for i in ranked], judged)
    return out


def test_fixture_matches_reference_protocol(tmp_path: Path) -> None:
    ds = load_movielens_100k(name="ml-tiny", data_dir=write_ml(tmp_path / "ml"), **PARAMS)
    expected = reference(INTERACTIONS, **PARAMS)
    kept = {u: v for u, v in expected.items() if any(v[3].get(i, 0) > 0 for i in v[1])}
    assert [s.query_id for s in ds.sets] == [str(u) for u in sorted(kept)]  # integer order
    for cset in ds.sets:
        history, ranked, scores, judged = kept[int(cset.query_id)]
        assert isinstance(cset.query, UserProfile)
        assert [h.item_id for h in cset.query.history] == [str(i) for i in history]
        assert cset.doc_ids == tuple(str(i) for i in ranked)
        assert [c.first_stage_score for c in cset.candidates] == pytest.approx(scores, abs=1e-6)
        assert ds.qrels[cset.query_id] == {str(i): g for i, g in judged.items()}
    assert ds.notes["users_total"] == 5
    assert ds.notes["users_dropped_too_few_interactions"] == 1  # user 5
    assert ds.notes["users_dropped_no_positive_candidate"] == 4 - len(kept)
    assert ds.notes["users_kept"] == len(ds.sets) == len(kept)
    assert ds.notes["history_len"] == 2 and ds.notes["num_candidates"] == 3
    assert ds.fingerprint == "1728f05d63c7f18a"  # pinned (run folders)


def test_fixture_hand_checked_details(tmp_path: Path) -> None:
    ds = load_movielens_100k(data_dir=write_ml(tmp_path / "ml"), **PARAMS)
    user10 = next(s for s in ds.sets if s.query_id == "10")
    history = user10.query.history
    # training, oldest first: 1, 3 (t=100, tie broken by item id), 2, 4 -> last two
    assert [(h.item_id, h.rating) for h in history] == [("2", 3.0), ("4", 5.0)]
    assert history[0].fields["genres"] == ("Action", "Adventure", "Thriller")
    assert ds.qrels["10"] == {"6": 1, "7": 0}  # rating 4 -> 1, rating 1 -> 0 (judged)
    movie = next(c for c in user10.candidates if c.doc_id == "6")
    assert movie.title == "Twelve Monkeys"
    assert movie.text == "Twelve Monkeys (1995) — Drama, Sci-Fi"
    assert movie.fields == {"year": 1995, "genres": ("Drama", "Sci-Fi")}
    assert not {"1", "2", "3", "4"} & set(user10.doc_ids)


def test_unknown_year_is_none(tmp_path: Path) -> None:
    movies = read_items(write_ml(tmp_path / "ml") / "ml-100k.item")
    assert movies[8].year is None
    assert movies[8].text == "unknown — unknown"
    assert movies[1].text == "Toy Story (1995) — Animation, Children's, Comedy"


@pytest.mark.parametrize(
    ("extra", "line", "fragment"),
    [
        ("7\t1\tfive\t9\n", 22, "rating 'five' is not a number"),
        ("7\tx\t5\t9\n", 22, "item_id 'x' is not an integer"),
        ("7\t99\t5\t9\n", 22, "item 99 is not in ml-100k.item"),
        ("7\t1\t5\n", 22, "tab-separated fields"),
        ("7\t1\t5\tinf\n", 22, "not finite"),
    ],
)
def test_malformed_interactions(tmp_path: Path, extra: str, line: int, fragment: str) -> None:
    folder = write_ml(tmp_path / "ml", extra_inter=extra)
    with pytest.raises(DataFormatError, match=fragment) as exc:
        load_movielens_100k(data_dir=folder, **PARAMS)
    assert f"ml-100k.inter:{line}:" in str(exc.value)


def test_header_must_name_columns(tmp_path: Path) -> None:
    folder = write_ml(tmp_path / "ml")
    (folder / "ml-100k.item").write_text("item_id:token\ttitle:token_seq\n1\tX\n", "utf-8")
    with pytest.raises(DataFormatError, match="movie_title, release_year, class") as exc:
        load_movielens_100k(data_dir=folder)
    assert "ml-100k.item:1:" in str(exc.value)


def test_duplicate_item(tmp_path: Path) -> None:
    folder = write_ml(tmp_path / "ml")
    with (folder / "ml-100k.item").open("a", encoding="utf-8") as handle:
        handle.write("3\tAgain\t1995\tDrama\n")
    with pytest.raises(DataFormatError, match="item 3 listed twice") as exc:
        load_movielens_100k(data_dir=folder)
    assert "ml-100k.item:10:" in str(exc.value)


def test_missing_files_and_bad_parameters(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=r"empty/ml-100k\.inter"):
        load_movielens_100k(data_dir=tmp_path / "empty")
    with pytest.raises(HarnessError, match="num_candidates must be at least 1"):
        load_movielens_100k(data_dir=write_ml(tmp_path / "ml"), num_candidates=0)


def test_recbole_absent_gives_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "recbole" else real(name, *a)
    )
    with pytest.raises(HarnessError, match=r"pip install --no-deps recbole==1\.2\.1"):
        movielens_files()


# --- real data (the recbole wheel) -------------------------------------------------------

needs_recbole = pytest.mark.skipif(
    importlib.util.find_spec("recbole") is None,
    reason="recbole not installed (pip install --no-deps recbole==1.2.1)",
)


@pytest.fixture(scope="module")
def ml100k() -> Dataset:
    return load_movielens_100k()


def chronological() -> dict[str, list[str]]:
    """Each user's item ids sorted by (timestamp, item id), read independently of the loader."""
    inter_path, _ = movielens_files()
    rows: dict[str, list[tuple[float, int]]] = defaultdict(list)
    with inter_path.open(encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            user, item, _, stamp = line.rstrip("\n").split("\t")
            rows[user].append((float(stamp), int(item)))
    return {user: [str(i) for _, i in sorted(r)] for user, r in rows.items()}


@needs_recbole
def test_ml100k_counts(ml100k: Dataset) -> None:
    notes = ml100k.notes
    assert ml100k.task == "recommendation"
    assert notes["users_total"] == 943
    assert notes["users_dropped_too_few_interactions"] == 0
    assert notes["users_kept"] + notes["users_dropped_no_positive_candidate"] == 943
    assert notes["users_kept"] == len(ml100k.sets) == 607  # dataset card figure
    assert set(ml100k.qrels) == {s.query_id for s in ml100k.sets}
    assert [int(s.query_id) for s in ml100k.sets] == sorted(int(s.query_id) for s in ml100k.sets)
    assert all(len(s) == 20 and len(set(s.doc_ids)) == 20 for s in ml100k.sets)
    assert "ml-100k.inter" in ml100k.source


@needs_recbole
def test_ml100k_protocol(ml100k: Dataset) -> None:
    order = chronological()
    for cset in ml100k.sets:
        items = order[cset.query_id]
        training, held_out = items[:-10], items[-10:]
        history = [h.item_id for h in cset.query.history]
        assert history == training[-10:]  # oldest first, just before the held-out part
        assert not set(cset.doc_ids) & set(training)
        judged = ml100k.qrels[cset.query_id]
        assert set(judged) == set(held_out)
        assert any(judged.get(d, 0) > 0 for d in cset.doc_ids)
        scores = [c.first_stage_score for c in cset.candidates]
        assert scores == sorted(scores, reverse=True)


@needs_recbole
def test_ml100k_is_deterministic(ml100k: Dataset) -> None:
    # pinned (run folders)
    assert load_movielens_100k().fingerprint == ml100k.fingerprint == "32764475f6e8803e"
