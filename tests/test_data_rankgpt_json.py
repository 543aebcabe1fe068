"""RankGPT / rank_llm JSON candidate files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from harness.data.model import TextQuery
from harness.data.rankgpt_json import load_rankgpt_json
from harness.errors import DataFormatError, HarnessError

DL19 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "msmarco-dl19"


def hit(qid: Any, docid: Any, rank: int, score: float = 1.0, content: str = "text") -> dict:
    return {"content": content, "qid": qid, "docid": docid, "rank": rank, "score": score}


def entries() -> list[dict]:
    return [
        {"query": "fleas", "hits": [hit(1, "d9", 1, 9.5, "nine"), hit(1, "d1", 2, 3.0, "one")]},
        {"query": "no hits", "hits": []},
        {"query": "unjudged", "hits": [hit("7", "d1", 1)]},
        {"query": "cats", "hits": [hit("2", 5, 1, 4)]},
    ]


@pytest.fixture
def qrels(tmp_path: Path) -> Path:
    path = tmp_path / "qrels.txt"
    path.write_text("1 0 d1 2\n1 0 d9 0\n2 0 5 1\n", encoding="utf-8")
    return path


def write_json(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def test_load_keeps_file_order_and_counts_skips(tmp_path: Path, qrels: Path) -> None:
    run = write_json(tmp_path, entries())
    ds = load_rankgpt_json(run, qrels, name="tiny")
    assert ds.task == "text-ranking"
    assert [s.query_id for s in ds.sets] == ["1", "2"]
    first = ds.sets[0]
    assert first.query == TextQuery("fleas")
    assert first.doc_ids == ("d9", "d1")
    assert [c.text for c in first.candidates] == ["nine", "one"]
    assert [c.first_stage_score for c in first.candidates] == [9.5, 3.0]
    assert ds.sets[1].doc_ids == ("5",)  # integer docid becomes a string
    assert ds.notes["skipped_empty_queries"] == 1
    assert ds.notes["dropped_unjudged_queries"] == 1
    assert ds.qrels == {"1": {"d1": 2, "d9": 0}, "2": {"5": 1}}
    assert str(run) in ds.source and str(qrels) in ds.source
    assert ds.fingerprint == load_rankgpt_json(run, qrels, name="other").fingerprint
    assert ds.fingerprint == "0c6b4ba9706a2518"  # pinned (run folders)


def test_json_syntax_error_reports_line(tmp_path: Path, qrels: Path) -> None:
    run = tmp_path / "run.json"
    run.write_text('[\n  {"query": "q",\n   "hits": [\n     {"content": "x",, }\n', "utf-8")
    with pytest.raises(DataFormatError, match="invalid JSON") as exc:
        load_rankgpt_json(run, qrels, name="x")
    assert exc.value.line == 4
    assert "run.json:4:" in str(exc.value)


def test_hit_missing_key_names_entry_qid_and_key(tmp_path: Path, qrels: Path) -> None:
    data = entries()
    del data[3]["hits"][0]["score"]
    with pytest.raises(DataFormatError) as exc:
        load_rankgpt_json(write_json(tmp_path, data), qrels, name="x")
    message = str(exc.value)
    assert "run.json" in message
    assert "entries[3].hits[0]" in message
    assert "query 2" in message
    assert "'score'" in message


def test_duplicate_docid_names_qid_and_doc(tmp_path: Path, qrels: Path) -> None:
    data = entries()
    data[0]["hits"].append(hit(1, "d9", 3))
    with pytest.raises(DataFormatError, match="query 1 lists doc d9 twice"):
        load_rankgpt_json(write_json(tmp_path, data), qrels, name="x")


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d[0]["hits"].reverse(), "rank order"),
        (lambda d: d[0]["hits"][1].update(qid=2), "qid 2 differs from 1"),
        (lambda d: d[0]["hits"][1].update(score="high"), "'score' must be a number"),
        (lambda d: d[0]["hits"][1].update(rank=2.5), "'rank' must be an integer"),
        (lambda d: d[0]["hits"][1].update(content=None), "'content' must be a string"),
        (lambda d: d[0].pop("query"), "entries\\[0\\]: missing key 'query'"),
        (lambda d: d[0].update(query=" "), "non-empty string"),
        (lambda d: d[0].update(hits={}), "'hits' must be a list"),
        (lambda d: d.append({"query": "again", "hits": [hit(1, "d1", 1)]}), "already listed"),
    ],
)
def test_structural_errors(tmp_path: Path, qrels: Path, mutate, fragment: str) -> None:
    data = entries()
    mutate(data)
    with pytest.raises(DataFormatError, match=fragment) as exc:
        load_rankgpt_json(write_json(tmp_path, data), qrels, name="x")
    assert "run.json" in str(exc.value)


def test_top_level_must_be_a_list(tmp_path: Path, qrels: Path) -> None:
    with pytest.raises(DataFormatError, match="JSON list"):
        load_rankgpt_json(write_json(tmp_path, {"query": "q"}), qrels, name="x")


def test_missing_files(tmp_path: Path, qrels: Path) -> None:
    with pytest.raises(HarnessError, match=r"absent\.json"):
        load_rankgpt_json(tmp_path / "absent.json", qrels, name="x")
    run = write_json(tmp_path, entries())
    with pytest.raises(HarnessError, match=r"absent\.qrels"):
        load_rankgpt_json(run, tmp_path / "absent.qrels", name="x")


# --- real data ---------------------------------------------------------------------------


def ndcg_at_10(doc_ids: tuple[str, ...], judged: dict[str, int]) -> float:
    """trec_eval's ndcg_cut.10 with linear gain, enough to check the loaded order."""
    dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, d in enumerate(doc_ids[:10]))
    ideal = sorted(judged.values(), reverse=True)[:10]
    return dcg / sum(g / math.log2(i + 2) for i, g in enumerate(ideal))


@pytest.mark.skipif(
    not DL19.is_dir(), reason=f"shared DL19 data not found at {DL19} (see shared/data/README.md)"
)
def test_dl19_bm25_top100() -> None:
    ds = load_rankgpt_json(DL19 / "bm25_top100.rankgpt.json", DL19 / "qrels.txt", name="dl19")
    assert len(ds.sets) == 43
    assert all(len(s) == 100 for s in ds.sets)
    assert set(ds.qrels) == {s.query_id for s in ds.sets}
    assert ds.notes["dropped_unjudged_queries"] == 0
    assert ds.notes["skipped_empty_queries"] == 0
    mean = sum(ndcg_at_10(s.doc_ids, dict(ds.qrels[s.query_id])) for s in ds.sets) / 43
    assert mean == pytest.approx(0.5058, abs=5e-5)  # the published trec_eval figure
