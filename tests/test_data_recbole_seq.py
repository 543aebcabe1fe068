"""LLMRank-layout sequential recommendation: history as titles, the target as the relevant item."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import RunConfig
from harness.data.model import UserProfile
from harness.data.recbole_seq import load_recbole_seq, read_candidate_file, read_item_titles
from harness.data.registry import load_card, load_dataset
from harness.errors import DataFormatError, HarnessError
from harness.runner import prepare_run

INTER = (
    "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    "u1\t1 2 3\t4\n"  # target 4 among u1's candidates
    "u2\t5 6\t7\n"  # target 7 missed by the first stage
    "u3\t8\t9\n"  # not in the candidate file: ignored
)
ITEMS = "item_id:token\ttitle:token_seq\n" + "".join(f"{i}\tItem {i}\n" for i in range(1, 13))
CANDIDATES = "u2\t10 11 12 1\nu1\t10 4 11 12\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "games"
    write(root / "g.test.inter", INTER)
    write(root / "g.item", ITEMS)
    write(root / "g.sasrec", CANDIDATES)
    return root


def load(folder: Path, **options):
    return load_recbole_seq(
        folder / "g.test.inter", folder / "g.item", folder / "g.sasrec", name="g", **options
    )


def test_builds_profiles_candidates_and_target_judgments(folder: Path) -> None:
    dataset = load(folder)
    assert dataset.task == "recommendation"
    assert [s.query_id for s in dataset.sets] == ["u2", "u1"]  # candidate-file order
    u1 = dataset.sets[1]
    assert isinstance(u1.query, UserProfile)
    assert [(h.item_id, h.title) for h in u1.query.history] == [
        ("1", "Item 1"), ("2", "Item 2"), ("3", "Item 3"),
    ]  # fmt: skip
    assert u1.doc_ids == ("10", "4", "11", "12")
    assert [c.text for c in u1.candidates] == ["Item 10", "Item 4", "Item 11", "Item 12"]
    assert [c.first_stage_score for c in u1.candidates] == [-1.0, -2.0, -3.0, -4.0]
    assert dataset.qrels == {"u2": {"7": 1}, "u1": {"4": 1}}  # u2's miss is still judged
    notes = dataset.notes
    assert notes["users_in_candidate_file"] == 2
    assert notes["users_with_target_in_candidates"] == 1
    assert notes["target_in_candidates_rate"] == 0.5
    assert notes["insert_target"] is False and notes["users_with_target_inserted"] == 0
    # pinned (run folders)
    assert dataset.fingerprint == "ca9c452f7af2e4d2"


def test_history_len_and_num_candidates_cut(folder: Path) -> None:
    dataset = load(folder, history_len=2, num_candidates=1)
    u1 = dataset.sets[1]
    assert [h.item_id for h in u1.query.history] == ["2", "3"]  # most recent, oldest first
    assert u1.doc_ids == ("10",)
    assert dataset.notes["users_with_target_in_candidates"] == 0


def test_insert_target_is_seeded_and_keeps_the_list_length(folder: Path) -> None:
    first = load(folder, insert_target=True, seed=3)
    again = load(folder, insert_target=True, seed=3)
    assert first.fingerprint == again.fingerprint
    u2 = first.sets[0]
    assert len(u2) == 4 and "7" in u2.doc_ids
    others = [d for d in u2.doc_ids if d != "7"]
    assert others == ["10", "11", "12", "1"][: len(others)]  # first-stage order kept
    assert [c.first_stage_score for c in u2.candidates] == [-1.0, -2.0, -3.0, -4.0]
    assert first.sets[1].doc_ids == ("10", "4", "11", "12")  # target present: untouched
    assert first.notes["users_with_target_inserted"] == 1
    assert "sha256" in first.notes["insert_protocol"]
    positions = {
        load(folder, insert_target=True, seed=s).sets[0].doc_ids.index("7") for s in range(12)
    }
    assert len(positions) > 1  # the seed moves it


def test_drop_missing_target(folder: Path) -> None:
    dataset = load(folder, drop_missing_target=True)
    assert [s.query_id for s in dataset.sets] == ["u1"]
    assert dataset.notes["users_dropped_missing_target"] == 1


def test_movie_title_column_as_in_ml1m(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ml-1m.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq\n"
        "1\tToy Story\t1995\tAnimation\n2\tJumanji\t1995\tAdventure\n",
    )
    assert read_item_titles(path) == {"1": "Toy Story", "2": "Jumanji"}


def test_titles_keep_their_own_spaces_as_llmrank_reads_them(tmp_path: Path) -> None:
    """LLMRank's ``load_text`` splits ``line.strip()`` on tabs: a title keeps its leading and
    inner spaces (its prompts show them); only the line's ends are trimmed."""
    games = write(
        tmp_path / "g.item",
        "item_id:token\ttitle:token_seq\n1\t The Sims 3 - PC\n2\tHalo  3 \t\n",
    )
    assert read_item_titles(games) == {"1": " The Sims 3 - PC", "2": "Halo  3"}
    movies = write(
        tmp_path / "ml.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\n1\t Heat \t1995\n",
    )
    assert read_item_titles(movies) == {"1": " Heat "}


@pytest.mark.parametrize(
    ("name", "body", "line", "fragment"),
    [
        ("g.sasrec", "u1\t10 4\nu2 10 11\n", 2, "expected 'user_id<TAB>"),
        ("g.sasrec", "u1\t10 4\nu2\t\n", 2, "has no candidates"),
        ("g.sasrec", "u1\t10 4\nu2\t10 11 10\n", 2, "lists item 10 twice"),
        ("g.sasrec", "u1\t10 4\nu1\t11\n", 2, "user u1 listed twice"),
        ("g.sasrec", "u1\t10 4\nu9\t11\n", 2, "user u9 is not in"),
        ("g.sasrec", "u1\t10 4\nu2\t11 99\n", 2, "item 99 is not in the .item file"),
        ("g.test.inter", "user_id:token\titem_id:token\n", 1, "lacks column(s) item_id_list"),
        ("g.test.inter", INTER.replace("u2\t5 6\t7", "u2\t5 6"), 3, "at least 3 tab-separated"),
        ("g.test.inter", INTER + "u1\t1\t2\n", 5, "user u1 listed twice"),
        ("g.test.inter", INTER.replace("5 6", "5 66"), 3, "item 66 is not in the .item file"),
        ("g.item", "item_id:token\tprice:float\n", 1, "needs item_id and title"),
        ("g.item", ITEMS.replace("Item 4\n", " \n"), 5, "item 4 has an empty title"),
        ("g.item", ITEMS + "4\tAgain\n", 14, "item 4 listed twice"),
    ],
)
def test_malformed_files_name_file_and_line(
    folder: Path, name: str, body: str, line: int, fragment: str
) -> None:
    write(folder / name, body)
    with pytest.raises(DataFormatError) as exc:
        load(folder)
    assert fragment in str(exc.value)
    assert f"{name}:{line}:" in str(exc.value)


def test_missing_and_empty_files(folder: Path) -> None:
    (folder / "g.item").unlink()
    with pytest.raises(HarnessError, match=r"g\.item"):
        load(folder)
    with pytest.raises(DataFormatError, match="no candidate lists"):
        read_candidate_file(write(folder / "empty", "\n"))
    with pytest.raises(HarnessError, match="history_len"):
        load(folder, history_len=0)


def test_a_card_prepares_a_run(folder: Path, tmp_path: Path) -> None:
    card = write(
        tmp_path / "llmrank.yaml",
        "name: games-test\ntask: recommendation\nloader:\n  format: recbole-seq\n"
        f"  path: {folder}\n  inter: g.test.inter\n  item: g.item\n  candidates: g.sasrec\n"
        "  num_candidates: 3\n  insert_target: true\n",
    )
    assert load_card(card).status() == "available"
    assert [len(s) for s in load_dataset(load_card(card)).sets] == [3, 3]
    config = RunConfig(reranker="first-stage", dataset=str(card), perms=2, out=str(tmp_path))
    prepared = prepare_run(config.validate())  # everything up to reranking; no metrics needed
    assert prepared.header.dataset.notes["users_with_target_inserted"] == 1
    assert prepared.header.dataset.task == "recommendation"
    write(folder / "g.sasrec", "")  # status checks files exist, not their content
    (folder / "g.item").unlink()
    assert "g.item" in load_card(card).status()
