"""The report's plain-language reading, first-stage effectiveness, too-few-queries note and
per-query CSV."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.config import RunConfig
from harness.report.reading import smallest_sign_flip_p, too_few_queries_note
from harness.runner import execute_run, prepare_run
from tests.conftest import write_rankgpt_folder

cli = CliRunner()


def test_five_queries_can_never_be_significant():
    assert smallest_sign_flip_p(5) == 2 / 32
    note = too_few_queries_note(5, rows=1)
    assert note is not None and "2/2^5 = 0.0625" in note
    assert too_few_queries_note(6, rows=1) is None  # 2/64 < 0.05
    assert too_few_queries_note(6, rows=2) is not None  # Holm: 2 x 2/64 = 0.0625
    assert too_few_queries_note(43, rows=8) is None


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("reading")
    data = write_rankgpt_folder(root / "data", queries=5, candidates=8)
    for name in ("identity", "first-stage"):
        config = RunConfig(reranker=name, dataset=str(data), out=str(root / name), perms=4)
        execute_run(prepare_run(config.validate()))
    out = root / "report"
    result = cli.invoke(
        app, ["report", str(root / "identity"), str(root / "first-stage"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


def test_each_run_is_read_in_one_sentence(report):
    text = report.with_suffix(".md").read_text()
    identity = next(line for line in text.splitlines() if line.startswith("identity:"))
    # identity copies its input: every pair comes out as shown
    assert "100% of candidate pairs come out in the order they were shown" in identity
    assert "the top item changes between" in identity
    first = next(line for line in text.splitlines() if line.startswith("first-stage:"))
    assert "reranking leaves NDCG@10 at the first stage's" in first
    assert "| ndcg@10_first_stage |" in text and "| copy_tau |" in text


def test_the_comparison_says_five_queries_cannot_be_significant(report):
    text = " ".join(report.with_suffix(".md").read_text().split())
    assert "With 5 queries no difference can be significant" in text
    assert "NDCG@10 first-stage order" not in text  # renamed: it is not the first stage's own
    assert "| NDCG@10 reranking the first-stage order |" in text


def test_per_query_csv_holds_every_run_and_query(report):
    path = report.parent / f"{report.name}_figures" / "per_query.csv"
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 10 and {r["run"] for r in rows} == {"identity", "first-stage"}
    identity = [r for r in rows if r["run"] == "identity"]
    assert [float(r["copy_tau"]) for r in identity] == pytest.approx([1.0] * 5)
    assert all(r["ndcg@10_first_stage"] for r in rows)
