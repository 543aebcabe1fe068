"""BEIR folders: readers, the cached BM25 first stage, runs given instead, and `harness run`.

The BM25 check is independent of bm25s: the test scores the fixture with its own Lucene BM25
(same k1, b, tokenization) and computes nDCG@10 itself, and `harness run` with the
first-stage control must reproduce that number. The fixture's words are made up, so no
stopword list is involved, and the test asserts there are no near-ties in the top 10, so
float32 (bm25s) and float64 (here) scores give the same rankings.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.data.beir import load_beir, read_beir_qrels, read_queries_jsonl
from harness.data.registry import load_card, load_dataset, resolve_card
from harness.errors import DataFormatError, HarnessError

VOCAB = [
    *("zorb", "quix", "plonk", "vexa", "trum", "gavo", "hesk", "miro", "nafu", "pelt"),
    *("ruke", "sivo", "tano", "ulgo", "wren", "yaxi", "bripa", "dolm", "fenk", "jusk"),
]
K1, B = 0.9, 0.4


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def write_beir_folder(folder: Path, *, seed: int = 11, docs: int = 40, queries: int = 6) -> Path:
    """A random BEIR folder with graded qrels; doc lengths all differ, so ties are rare."""
    rng = random.Random(seed)
    corpus = [
        {
            "_id": f"d{i:02d}",
            "title": rng.choice(VOCAB).title(),
            "text": " ".join(rng.choices(VOCAB, k=3 + i)),
        }
        for i in range(docs)
    ]
    write(folder / "corpus.jsonl", jsonl(corpus))
    write(
        folder / "queries.jsonl",
        jsonl([{"_id": f"q{q}", "text": " ".join(rng.sample(VOCAB, 2))} for q in range(queries)]),
    )
    rows = ["query-id\tcorpus-id\tscore"]
    for q in range(queries):
        for d in rng.sample(range(docs), 6):
            rows.append(f"q{q}\td{d:02d}\t{rng.randint(0, 2)}")
        rows.append(f"q{q}\td{rng.randrange(docs):02d}x\t1")  # judged but not in the corpus
    write(folder / "qrels" / "test.tsv", "\n".join(rows) + "\n")
    return folder


@pytest.fixture
def beir_folder(tmp_path: Path) -> Path:
    return write_beir_folder(tmp_path / "beir")


@pytest.fixture
def bm25_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the user cache at tmp_path, keeping numba's JIT cache where it already is."""
    pytest.importorskip("bm25s")
    from harness.metrics.effectiveness import _numba_cache_dir

    monkeypatch.setenv("NUMBA_CACHE_DIR", _numba_cache_dir())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "harness" / "bm25"


# --- an independent BM25 and nDCG ----------------------------------------------------------


def independent_bm25(folder: Path, depth: int = 100) -> dict[str, list[tuple[str, float]]]:
    """Lucene BM25 over title + text, written from the formula, top ``depth`` with score > 0."""

    def tokens(text: str) -> list[str]:
        return re.findall(r"\b\w\w+\b", text.lower())

    docs = {}
    for line in (folder / "corpus.jsonl").read_text().splitlines():
        record = json.loads(line)
        docs[record["_id"]] = Counter(tokens(f"{record['title']} {record['text']}"))
    lengths = {d: sum(tf.values()) for d, tf in docs.items()}
    avgdl = sum(lengths.values()) / len(docs)
    df = Counter(term for tf in docs.values() for term in tf)
    n = len(docs)
    runs = {}
    for line in (folder / "queries.jsonl").read_text().splitlines():
        record = json.loads(line)
        scores = {}
        for d, tf in docs.items():
            score = 0.0
            for term in set(tokens(record["text"])):
                if tf[term]:
                    idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
                    norm = K1 * (1 - B + B * lengths[d] / avgdl)
                    score += idf * tf[term] / (tf[term] + norm)
            if score > 0:
                scores[d] = score
        ranked = sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)
        runs[record["_id"]] = ranked[:depth]
    return runs


def independent_ndcg10(ranking: list[str], judged: dict[str, int]) -> float:
    dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranking[:10]))
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:10]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def assert_no_near_ties(runs: dict[str, list[tuple[str, float]]]) -> None:
    for hits in runs.values():
        top = [score for _, score in hits[:11]]
        assert all(a - b > 1e-4 for a, b in itertools.pairwise(top)), "fixture has near-ties"


# --- the BM25 first stage ----------------------------------------------------------------


def test_bm25_lists_match_an_independent_bm25(beir_folder: Path, bm25_cache: Path) -> None:
    expected = independent_bm25(beir_folder)
    assert_no_near_ties(expected)
    dataset = load_dataset(resolve_card(str(beir_folder)))
    assert [s.query_id for s in dataset.sets] == [f"q{q}" for q in range(6)]
    for cset in dataset.sets:
        assert list(cset.doc_ids) == [d for d, _ in expected[cset.query_id]]
        got = [c.first_stage_score for c in cset.candidates]
        assert got == pytest.approx([s for _, s in expected[cset.query_id]], rel=1e-5)
        assert cset.candidates[0].text.startswith(cset.candidates[0].title + " ")
    notes = dataset.notes
    assert notes["retrieval_depth"] == 100
    assert (notes["bm25"]["k1"], notes["bm25"]["b"], notes["bm25"]["scoring"]) == (K1, B, "lucene")
    assert notes["corpus_docs"] == 40
    assert Path(notes["bm25_cache"]).parent == bm25_cache
    # The judged doc missing from the corpus stays in the qrels (it counts in the ideal DCG).
    assert any(d.endswith("x") for d in dataset.qrels["q0"])


def test_harness_run_reproduces_the_independent_ndcg(
    beir_folder: Path, bm25_cache: Path, tmp_path: Path
) -> None:
    expected_runs = independent_bm25(beir_folder)
    qrels = read_beir_qrels(beir_folder / "qrels" / "test.tsv")
    expected = sum(
        independent_ndcg10([d for d, _ in hits], qrels[qid]) for qid, hits in expected_runs.items()
    ) / len(expected_runs)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["run", "--reranker", "first-stage", "--dataset", str(beir_folder), "--perms", "2",
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["ndcg@10"]["value"] == pytest.approx(expected, abs=1e-9)
    assert 0.05 < expected < 0.95  # the fixture discriminates
    assert results["dataset"]["notes"]["retrieval_depth"] == 100


def test_bm25_cache_is_reused_and_keyed_by_corpus_and_depth(
    beir_folder: Path, bm25_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {
        "corpus": beir_folder / "corpus.jsonl",
        "queries": beir_folder / "queries.jsonl",
        "qrels": beir_folder / "qrels" / "test.tsv",
    }
    first = load_beir(**files, name="x")
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "bm25s", None)  # any rebuild would now fail
        again = load_beir(**files, name="x")
        assert again.fingerprint == first.fingerprint
        with pytest.raises(HarnessError, match=r"harness-rerank\[bm25\]"):
            load_beir(**files, name="x", depth=5)  # another depth is another cache entry
    shallow = load_beir(**files, name="x", depth=5)
    assert max(len(s) for s in shallow.sets) == 5
    with files["corpus"].open("a") as handle:
        handle.write(json.dumps({"_id": "extra", "text": "zorb quix"}) + "\n")
    changed = load_beir(**files, name="x")
    assert changed.notes["bm25_cache"] != first.notes["bm25_cache"]
    assert len(list(bm25_cache.glob("*.trec"))) == 3


# --- a run given instead -------------------------------------------------------------------


def test_a_run_file_in_the_folder_is_used(beir_folder: Path) -> None:
    write(beir_folder / "my.trec", "q1 Q0 d03 1 2.5 t\nq1 Q0 d07 2 1.5 t\nq9 Q0 d01 1 1.0 t\n")
    write(
        beir_folder / "queries.jsonl",
        jsonl([{"_id": "q1", "text": "a"}, {"_id": "q9", "text": "b"}]),
    )
    dataset = load_dataset(resolve_card(str(beir_folder)))
    assert [(s.query_id, s.doc_ids) for s in dataset.sets] == [("q1", ("d03", "d07"))]
    assert dataset.notes["first_stage"] == "TREC run my.trec"
    assert dataset.notes["dropped_unjudged_queries"] == 1  # q9 has no qrels
    # pinned (run folders)
    assert dataset.fingerprint == "be3498a9936639b9"


@pytest.mark.parametrize(
    ("run", "line", "fragment"),
    [
        ("q1 Q0 d03 1 2.5 t\nq1 Q0 nope 2 1.5 t\n", 2, r"doc nope \(query q1\) is not in corpus"),
        ("q1 Q0 d03 1 2.5 t\nq7 Q0 d01 1 1.0 t\n", 2, "query q7 is not in"),
    ],
)
def test_run_ids_missing_from_corpus_or_queries_name_the_run_line(
    beir_folder: Path, run: str, line: int, fragment: str
) -> None:
    path = write(beir_folder / "run.trec", run)
    with pytest.raises(DataFormatError, match=fragment) as exc:
        load_dataset(resolve_card(str(beir_folder)))
    assert f"{path.name}:{line}:" in str(exc.value)


def test_a_card_names_the_run_split_and_depth(beir_folder: Path, tmp_path: Path) -> None:
    write(beir_folder / "runs" / "a.run", "q2 Q0 d01 1 3 t\nq2 Q0 d02 2 2 t\nq2 Q0 d03 3 1 t\n")
    write(beir_folder / "qrels" / "dev.tsv", "query-id\tcorpus-id\tscore\nq2\td02\t1\n")
    card = write(
        tmp_path / "card.yaml",
        f"name: c\nloader:\n  format: beir\n  path: {beir_folder}\n  split: dev\n"
        "  run: runs/a.run\n  depth: 2\n",
    )
    dataset = load_dataset(load_card(card))
    assert [s.doc_ids for s in dataset.sets] == [("d01", "d02")]
    assert dataset.qrels == {"q2": {"d02": 1}}


# --- readers, malformed and missing files -------------------------------------------------


def test_read_beir_qrels_skips_the_header_only(tmp_path: Path) -> None:
    path = write(tmp_path / "q.tsv", "\nquery-id\tcorpus-id\tscore\n1\td1\t2\n1\td2\t0\n\n")
    assert read_beir_qrels(path) == {"1": {"d1": 2, "d2": 0}}
    assert read_beir_qrels(write(tmp_path / "n.tsv", "1\td1\t1\n")) == {"1": {"d1": 1}}


@pytest.mark.parametrize(
    ("body", "line", "fragment"),
    [
        ("query-id\tcorpus-id\tscore\n1\td1\n", 2, "expected 3 fields"),
        ("query-id\tcorpus-id\tscore\n1\td1\t1\n1\td2\thigh\n", 3, "'high' is not an integer"),
        ("1\td1\t1\n1\td1\t2\n", 2, "different grades"),
        ("1\td1\t1\nquery-id\tcorpus-id\tscore\n", 2, "'score' is not an integer"),
    ],
)
def test_malformed_qrels_name_file_and_line(
    tmp_path: Path, body: str, line: int, fragment: str
) -> None:
    path = write(tmp_path / "test.tsv", body)
    with pytest.raises(DataFormatError, match=fragment) as exc:
        read_beir_qrels(path)
    assert exc.value.line == line and f"test.tsv:{line}:" in str(exc.value)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('{"_id": "1", "text": "a"}\n{"_id": "2", "text": \n', "invalid JSON"),
        ('{"_id": "1", "text": "a"}\n{"_id": "2"}\n', "query 2: missing or empty 'text'"),
        ('{"_id": "1", "text": "a"}\n{"text": "b"}\n', "missing or non-string '_id'"),
        ('{"_id": "1", "text": "a"}\n{"_id": 1, "text": "b"}\n', "query 1 listed twice"),
    ],
)
def test_malformed_queries_name_file_and_line(tmp_path: Path, body: str, fragment: str) -> None:
    path = write(tmp_path / "queries.jsonl", body)
    with pytest.raises(DataFormatError, match=fragment) as exc:
        read_queries_jsonl(path)
    assert "queries.jsonl:2:" in str(exc.value)


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        ("not json", "invalid JSON"),
        ('{"_id": "d00", "text": "again"}', "doc d00 listed twice"),
        ('{"_id": "z", "title": 3, "text": "t"}', "non-string 'title'"),
    ],
)
def test_malformed_corpus_lines_stop_the_bm25_build(
    beir_folder: Path, bm25_cache: Path, record: str, fragment: str
) -> None:
    corpus = beir_folder / "corpus.jsonl"
    lines = corpus.read_text().splitlines()
    lines.insert(2, record)
    corpus.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=fragment) as exc:
        load_dataset(resolve_card(str(beir_folder)))
    assert "corpus.jsonl:3:" in str(exc.value)
    assert not list(bm25_cache.glob("*.trec"))


def test_a_judged_query_missing_from_queries_names_the_qrels_line(
    beir_folder: Path, bm25_cache: Path
) -> None:
    qrels = beir_folder / "qrels" / "test.tsv"
    qrels.write_text(qrels.read_text() + "q99\td01\t1\n")
    with pytest.raises(DataFormatError, match="query q99 is not in") as exc:
        load_dataset(resolve_card(str(beir_folder)))
    assert exc.value.line == len(qrels.read_text().splitlines())


def test_missing_files_are_named(beir_folder: Path, tmp_path: Path) -> None:
    card = write(tmp_path / "c.yaml", f"name: c\nloader:\n  format: beir\n  path: {beir_folder}\n")
    (beir_folder / "qrels" / "test.tsv").rename(beir_folder / "qrels" / "dev.tsv")
    write(beir_folder / "qrels" / "train.tsv", "1\td1\t1\n")
    assert "several splits ['dev', 'train']" in load_card(card).status()
    (beir_folder / "qrels" / "train.tsv").unlink()
    (beir_folder / "corpus.jsonl").unlink()
    status = load_card(card).status()
    assert status.startswith("missing:") and "corpus.jsonl" in status
    with pytest.raises(HarnessError, match=r"corpus\.jsonl"):
        load_dataset(load_card(card))


def test_unknown_card_options_are_rejected(beir_folder: Path, tmp_path: Path) -> None:
    card = write(
        tmp_path / "c.yaml", f"name: c\nloader:\n  format: beir\n  path: {beir_folder}\n  dept: 5\n"
    )
    with pytest.raises(HarnessError, match=r"unknown loader option\(s\) \['dept'\]"):
        load_dataset(load_card(card))


def test_bad_bm25_parameters_are_user_errors(beir_folder: Path, bm25_cache: Path) -> None:
    files = {
        "corpus": beir_folder / "corpus.jsonl",
        "queries": beir_folder / "queries.jsonl",
        "qrels": beir_folder / "qrels" / "test.tsv",
    }
    for bad in ({"depth": 0}, {"k1": "high"}, {"b": 2}):
        with pytest.raises(HarnessError):
            load_beir(**files, name="x", **bad)


def test_qrels_reading_streams(tmp_path: Path) -> None:
    """A 1M-line qrels file (~10 MB) is read in a child process whose peak RSS grows by far
    less than the file: memory follows what is kept (200 pairs), not the file size."""
    path = tmp_path / "big.tsv"
    block = "".join(f"q{i % 50}\td{i % 200}\t1\n" for i in range(10_000)).encode()
    with path.open("wb") as handle:
        handle.write(b"query-id\tcorpus-id\tscore\n")
        for _ in range(100):
            handle.write(block)
    assert path.stat().st_size > 10_000_000
    code = (
        "import resource, sys\n"
        "from harness.data.beir import read_beir_qrels\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "qrels = read_beir_qrels(sys.argv[1])\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(sum(map(len, qrels.values())), (after - before) * 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    pairs, growth = map(int, out.stdout.split())
    assert pairs == 200
    assert growth < 4_000_000, f"peak RSS grew by {growth} bytes"
