"""TREC qrels/run/topics and BEIR corpus readers, and the joined text-ranking loader."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from harness.data.model import TextQuery
from harness.data.trec import (
    build_text_dataset,
    iter_lines,
    load_trec_dataset,
    read_corpus_jsonl,
    read_qrels,
    read_run,
    read_topics_tsv,
)
from harness.errors import ECHO_LIMIT, DataFormatError, HarnessError

DL19 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "msmarco-dl19"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def assert_located(exc: pytest.ExceptionInfo[DataFormatError], path: Path, line: int) -> None:
    message = str(exc.value)
    assert f"{path.name}:{line}:" in message
    assert exc.value.line == line
    assert "\n" not in message


# --- qrels -------------------------------------------------------------------------------


def test_read_qrels_ignores_iter_column_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "qrels.txt", "1 0 d1 2\n\n1 Q0 d2 0\n2 0 d1 1\n1 0 d1 2\n")
    assert read_qrels(path) == {"1": {"d1": 2, "d2": 0}, "2": {"d1": 1}}


@pytest.mark.parametrize(
    ("body", "line", "fragment"),
    [
        ("1 0 d1 1\n1 0 d2\n", 2, "expected 4 fields"),
        ("1 0 d1 1\n\n1 0 d2 high\n", 3, "grade 'high' is not an integer"),
        ("1 0 d1 1\n1 0 d1 2\n", 2, "different grades"),
    ],
)
def test_read_qrels_rejects_malformed_lines(
    tmp_path: Path, body: str, line: int, fragment: str
) -> None:
    path = write(tmp_path / "bad.qrels", body)
    with pytest.raises(DataFormatError, match=fragment) as exc:
        read_qrels(path)
    assert_located(exc, path, line)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "qrels.txt"
    for reader in (read_qrels, read_run, read_topics_tsv, read_corpus_jsonl):
        with pytest.raises(HarnessError, match=r"nope/qrels\.txt") as exc:
            reader(missing)
        assert not isinstance(exc.value, DataFormatError)


def test_non_utf8_byte_is_located_on_its_line(tmp_path: Path) -> None:
    path = tmp_path / "qrels.txt"
    good = b"".join(b"1 0 d%d 1\n" % i for i in range(5000))  # beyond any read-ahead buffer
    path.write_bytes(good + b"1 0 d\xff 1\n")
    with pytest.raises(DataFormatError, match="UTF-8") as exc:
        read_qrels(path)
    assert_located(exc, path, 5001)


def test_iter_lines_strips_newlines_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffa\r\nb\n".encode())
    assert list(iter_lines(path)) == [(1, "a"), (2, "b")]


# --- run ---------------------------------------------------------------------------------


def test_read_run_sorts_like_trec_eval(tmp_path: Path) -> None:
    # rank column deliberately disagrees with the scores; trec_eval ignores it.
    path = write(
        tmp_path / "run.trec",
        "q2 Q0 x 1 1.0 t\nq1 Q0 a 1 0.5 t\nq1 Q0 b 2 2.0 t\nq1 Q0 c 3 0.5 t\n\nq1 Q0 d 4 0.5 t\n",
    )
    run = read_run(path)
    assert list(run) == ["q2", "q1"]  # first appearance
    # score desc; ties by doc id *descending*, as trec_eval's comp_sim_docno
    assert run["q1"] == [("b", 2.0), ("d", 0.5), ("c", 0.5), ("a", 0.5)]


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        ("q1 Q0 a 2 1.0", "expected 6 fields"),
        ("q1 Q0 b x 1.0 t", "rank 'x' is not an integer"),
        ("q1 Q0 b 2 high t", "score 'high' is not a number"),
        ("q1 Q0 b 2 nan t", "not finite"),
        ("q1 Q0 a 2 1.0 t", "query q1 lists doc a twice"),
    ],
)
def test_read_run_rejects_malformed_lines(tmp_path: Path, bad_line: str, fragment: str) -> None:
    path = write(tmp_path / "run.trec", f"q1 Q0 a 1 2.0 t\n{bad_line}\n")
    with pytest.raises(DataFormatError, match=fragment) as exc:
        read_run(path)
    assert_located(exc, path, 2)


def reference_read_run(path: Path) -> dict[str, list[tuple[str, float]]]:
    """The dict-of-dicts reader read_run replaced (valid files only): every row as objects."""
    scores: dict[str, dict[str, float]] = {}
    for lineno, line in iter_lines(path):
        parts = line.split()
        if parts:
            docs = scores.setdefault(parts[0], {})
            assert parts[2] not in docs, f"duplicate at line {lineno}"
            docs[parts[2]] = float(parts[4])
    return {
        qid: sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)
        for qid, docs in scores.items()
    }


def shuffled_run(rng: random.Random) -> str:
    """Rows of 12 queries in random order (queries interleave and come back), tied scores,
    blank lines, numeric-looking ids whose string order differs from their numeric order."""
    rows = []
    for q in rng.sample(range(40), 12):
        for d in rng.sample(range(60), rng.randint(1, 15)):
            score = rng.choice(["1", "1.0", "2.5", "-0.5", "0", "-0.0", "1e1", "3"])
            rows.append(f"q{q} Q0 {d} {rng.randint(1, 99)} {score} tag\n")
    rng.shuffle(rows)
    for _ in range(3):
        rows.insert(rng.randrange(len(rows)), "\n")
    return "".join(rows)


@pytest.mark.parametrize("seed", range(5))
def test_read_run_equals_the_dict_reader_on_shuffled_tied_rows(tmp_path: Path, seed: int) -> None:
    path = write(tmp_path / "run.trec", shuffled_run(random.Random(seed)))
    run, expected = read_run(path), reference_read_run(path)
    assert list(run) == list(expected)  # first appearance
    assert {q: run[q] for q in run} == expected
    assert run == expected and len(run) == len(expected)
    assert all(q in run for q in expected) and "nope" not in run


def test_read_run_reopens_a_query_that_comes_back(tmp_path: Path) -> None:
    path = write(
        tmp_path / "run.trec",
        "q1 Q0 a 1 1.0 t\nq2 Q0 x 1 1.0 t\nq1 Q0 b 2 1.0 t\nq2 Q0 y 2 3.0 t\nq1 Q0 c 3 2.0 t\n",
    )
    assert read_run(path) == {
        "q1": [("c", 2.0), ("b", 1.0), ("a", 1.0)],
        "q2": [("y", 3.0), ("x", 1.0)],
    }
    assert list(read_run(path)) == ["q1", "q2"]


def test_duplicate_doc_in_a_reopened_query_is_located(tmp_path: Path) -> None:
    body = "q1 Q0 a 1 1.0 t\nq2 Q0 x 1 1.0 t\nq1 Q0 b 2 1.0 t\nq2 Q0 y 2 3.0 t\n\nq1 Q0 a 3 2.0 t\n"
    path = write(tmp_path / "run.trec", body)
    with pytest.raises(DataFormatError, match="query q1 lists doc a twice") as exc:
        read_run(path)
    assert_located(exc, path, 6)
    with pytest.raises(AssertionError, match="line 6"):
        reference_read_run(path)


# --- topics and corpus -------------------------------------------------------------------


def test_read_topics_tsv(tmp_path: Path) -> None:
    path = write(tmp_path / "topics.tsv", "1\twhat is a flea\n\n2\t how long  \n")
    assert read_topics_tsv(path) == {"1": "what is a flea", "2": "how long"}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("1\tok\n2 no tab here\n", "no tab"),
        ("1\tok\n2\t  \n", "empty text"),
        ("1\tok\n1\tagain\n", "listed twice"),
        ("1\tok\n\tno id\n", "empty query id"),
    ],
)
def test_read_topics_rejects_malformed_lines(tmp_path: Path, body: str, fragment: str) -> None:
    path = write(tmp_path / "topics.tsv", body)
    with pytest.raises(DataFormatError, match=fragment) as exc:
        read_topics_tsv(path)
    assert_located(exc, path, 2)


def jsonl(*records: object) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def test_read_corpus_keeps_only_wanted_ids(tmp_path: Path) -> None:
    path = write(
        tmp_path / "corpus.jsonl",
        jsonl(
            {"_id": "d1", "title": "T1", "text": "one"},
            {"_id": 2, "text": "two (no title, numeric id)"},
            {"_id": "d3", "title": "T3", "text": "three"},
        ),
    )
    assert read_corpus_jsonl(path, {"d1", "2"}) == {
        "d1": ("T1", "one"),
        "2": ("", "two (no title, numeric id)"),
    }
    assert len(read_corpus_jsonl(path)) == 3


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        ('{"_id": "d2", "text": ', "invalid JSON"),
        ('["d2", "text"]', "JSON object"),
        ('{"title": "t", "text": "x"}', "'_id'"),
        ('{"_id": "d2", "title": "t"}', "'text'"),
        ('{"_id": "d2", "title": 3, "text": "x"}', "'title'"),
        ('{"_id": "d1", "text": "again"}', "listed twice"),
    ],
)
def test_read_corpus_rejects_malformed_lines(tmp_path: Path, bad_line: str, fragment: str) -> None:
    path = write(tmp_path / "corpus.jsonl", jsonl({"_id": "d1", "text": "x"}) + bad_line + "\n")
    with pytest.raises(DataFormatError, match=fragment) as exc:
        read_corpus_jsonl(path)
    assert_located(exc, path, 2)


# --- joined loader -----------------------------------------------------------------------


@pytest.fixture
def trec_files(tmp_path: Path) -> dict[str, Path]:
    return {
        "run": write(
            tmp_path / "run.trec",
            "q1 Q0 d2 1 3.0 bm25\nq1 Q0 d1 2 2.0 bm25\nq9 Q0 d1 1 1.0 bm25\nq2 Q0 d3 1 5.0 bm25\n",
        ),
        "topics": write(tmp_path / "topics.tsv", "q1\tfirst query\nq2\tsecond\nq9\tunjudged\n"),
        "corpus": write(
            tmp_path / "corpus.jsonl",
            jsonl(
                {"_id": "d1", "title": "Fleas", "text": "Fleas live a year."},
                {"_id": "d2", "title": "", "text": "No title here."},
                {"_id": "d3", "title": "Cats", "text": "Cats sleep."},
                {"_id": "d4", "title": "Unused", "text": "Not in the run."},
            ),
        ),
        "qrels": write(tmp_path / "qrels.txt", "q1 0 d1 2\nq1 0 d2 0\nq2 0 d3 1\nq7 0 d4 1\n"),
    }


def load(files: dict[str, Path]):
    return load_trec_dataset(
        files["run"], files["topics"], files["corpus"], files["qrels"], name="tiny"
    )


def test_load_trec_dataset(trec_files: dict[str, Path]) -> None:
    ds = load(trec_files)
    assert ds.task == "text-ranking"
    assert [s.query_id for s in ds.sets] == ["q1", "q2"]
    q1 = ds.sets[0]
    assert q1.query == TextQuery("first query")
    assert q1.doc_ids == ("d2", "d1")
    assert [c.first_stage_score for c in q1.candidates] == [3.0, 2.0]
    assert q1.candidates[1].text == "Fleas Fleas live a year."
    assert q1.candidates[1].title == "Fleas"
    assert q1.candidates[0].text == "No title here."
    assert ds.qrels == {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    assert ds.notes["dropped_unjudged_queries"] == 1
    assert ds.notes["judged_queries_not_in_run"] == 1
    assert str(trec_files["run"]) in ds.source
    assert ds.fingerprint == "888275358ee6df37"  # pinned (run folders)
    assert load(trec_files).fingerprint == ds.fingerprint


def test_fingerprint_changes_with_content(trec_files: dict[str, Path]) -> None:
    before = load(trec_files).fingerprint
    write(trec_files["qrels"], "q1 0 d1 1\nq1 0 d2 0\nq2 0 d3 1\n")
    assert load(trec_files).fingerprint != before


def test_load_equals_the_dict_reader_path_on_shuffled_rows(tmp_path: Path) -> None:
    rng = random.Random(7)
    run = write(tmp_path / "run.trec", shuffled_run(rng))
    expected = reference_read_run(run)
    topics = write(tmp_path / "topics.tsv", "".join(f"q{q}\tquery {q}\n" for q in range(40)))
    corpus = write(
        tmp_path / "corpus.jsonl", jsonl(*({"_id": str(d), "text": f"p{d}"} for d in range(60)))
    )
    judged = list(expected)[:-2]  # two run queries without judgments are dropped
    qrels = write(
        tmp_path / "qrels.txt", "".join(f"{q} 0 {expected[q][-1][0]} 1\n" for q in judged)
    )
    loaded = load_trec_dataset(run, topics, corpus, qrels, name="shuffled")
    reference = build_text_dataset(
        expected,
        read_topics_tsv(topics),
        read_corpus_jsonl(corpus),
        read_qrels(qrels),
        name="shuffled",
        source=loaded.source,
        notes={},
    )
    assert loaded == reference and loaded.fingerprint == reference.fingerprint
    assert [s.query_id for s in loaded.sets] == judged
    assert loaded.notes["dropped_unjudged_queries"] == 2


def test_run_doc_missing_from_corpus(trec_files: dict[str, Path]) -> None:
    with trec_files["run"].open("a", encoding="utf-8") as handle:
        handle.write("q2 Q0 ghost 2 1.0 bm25\n")
    with pytest.raises(DataFormatError, match=r"doc ghost .*not in corpus") as exc:
        load(trec_files)
    assert_located(exc, trec_files["run"], 5)


@pytest.mark.parametrize(
    ("row", "shown"),
    [
        (
            "q2 Q0 {huge} 2 1.0 bm25",
            "doc {head}… (1,000,000 characters) (query q2) is not in corpus",
        ),
        ("q2 Q0 d9 2 {huge} bm25", "score '{head}'… (1,000,000 characters) is not a number"),
        ("q2 Q0 d3 2 1.0 bm25", "query q2 lists doc d3 twice"),  # short values: whole
    ],
)
def test_a_huge_value_from_a_run_file_is_cut_in_the_error(
    trec_files: dict[str, Path], row: str, shown: str
) -> None:
    huge = "x" * 1_000_000  # a 1 MB doc id made a 1 MB error message
    with trec_files["run"].open("a", encoding="utf-8") as handle:
        handle.write(row.format(huge=huge) + "\n")
    with pytest.raises(DataFormatError) as exc:
        load(trec_files)
    assert_located(exc, trec_files["run"], 5)
    assert shown.format(head="x" * ECHO_LIMIT) in str(exc.value)
    assert len(str(exc.value)) < ECHO_LIMIT + 200 + len(str(trec_files["corpus"]))


def test_run_query_missing_from_topics(trec_files: dict[str, Path]) -> None:
    write(trec_files["topics"], "q1\tfirst query\nq9\tunjudged\n")
    with pytest.raises(DataFormatError, match="query q2 is not in topics") as exc:
        load(trec_files)
    assert_located(exc, trec_files["run"], 4)


# --- real data ---------------------------------------------------------------------------

needs_dl19 = pytest.mark.skipif(
    not DL19.is_dir(), reason=f"shared DL19 data not found at {DL19} (see shared/data/README.md)"
)


@needs_dl19
def test_dl19_trec_files() -> None:
    run = read_run(DL19 / "bm25_top100.trec")
    qrels = read_qrels(DL19 / "qrels.txt")
    topics = read_topics_tsv(DL19 / "topics.tsv")
    assert len(run) == 43
    assert all(len(docs) == 100 for docs in run.values())
    assert len(qrels) == 43
    assert sum(len(j) for j in qrels.values()) == 9260
    assert set(topics) == set(run) == set(qrels)
    first = run["264014"][:2]
    assert first == [("5611210", 15.780599594116211), ("6641238", 15.090800285339355)]
    assert run == reference_read_run(DL19 / "bm25_top100.trec")


@needs_dl19
def test_dl19_trec_load_keeps_its_fingerprint(tmp_path: Path) -> None:
    """DL19 through the TREC loader (corpus: the RankGPT file's passages) is the dataset the
    dict-based reader built, with the fingerprint it had (pinned)."""
    entries = json.loads((DL19 / "bm25_top100.rankgpt.json").read_text(encoding="utf-8"))
    passages = {hit["docid"]: hit["content"] for entry in entries for hit in entry["hits"]}
    corpus = write(
        tmp_path / "corpus.jsonl", jsonl(*({"_id": d, "text": t} for d, t in passages.items()))
    )
    files = [DL19 / "bm25_top100.trec", DL19 / "topics.tsv", corpus, DL19 / "qrels.txt"]
    loaded = load_trec_dataset(*files, name="dl19")
    reference = build_text_dataset(
        reference_read_run(files[0]),
        read_topics_tsv(files[1]),
        read_corpus_jsonl(corpus),
        read_qrels(files[3]),
        name="dl19",
        source=loaded.source,
        notes={},
    )
    assert loaded == reference
    assert loaded.fingerprint == reference.fingerprint == "f3f2702ee722281f"
