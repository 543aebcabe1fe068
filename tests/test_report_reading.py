"""The report's plain-language reading, first-stage effectiveness, too-few-queries note and
per-query CSV."""

from __future__ import annotations

import csv

import numpy as np
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
    # 12 candidates: more than the top 10, so position bias and its exposure plot are defined
    data = write_rankgpt_folder(root / "data", queries=5, candidates=12)
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
    assert "the top item differs in" in identity
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
    assert {r["relevance_level"] for r in rows} == {"1"}  # what their mrr@10 counts


def test_no_bias_band_is_the_binomial_central_range():
    """Binomial(20, 0.5): P(X <= 5) = 0.0207 < 0.025 <= P(X <= 6) = 0.0577, so the 2.5%
    quantile is 6 and by symmetry the 97.5% one is 14: shares [0.30, 0.70]."""
    import numpy as np

    from harness.metrics.position_bias import no_bias_band

    low, high = no_bias_band(np.array([20, 20, 0]), np.array([0.5, 0.5, 0.5]))
    assert low[:2].tolist() == [0.3, 0.3] and high[:2].tolist() == [0.7, 0.7]
    assert np.isnan(low[2]) and np.isnan(high[2])


def test_the_exposure_plot_has_a_band_for_random_designs_only(report):
    from harness.report.figures import exposure_bands
    from harness.report.load import load_runs

    runs = load_runs([report.parent / "identity", report.parent / "first-stage"])
    bands = exposure_bands(runs)
    assert set(bands) == {"identity", "first-stage"}
    low, high = bands["identity"]
    expected = runs[0].results.position_bias["expected_top10"]
    assert all(lo <= e <= hi for lo, e, hi in zip(low, expected, high, strict=True))


def test_a_small_range_of_a_unit_metric_is_not_magnified():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.report.plots import at_least_span

    fig, ax = plt.subplots()
    ax.set_ylim(0.400, 0.405)
    at_least_span(ax)
    assert ax.get_ylim() == pytest.approx((0.3025, 0.5025))
    ax.set_ylim(0.0, 0.01)  # near an end: the span stays inside [0, 1]
    at_least_span(ax)
    assert ax.get_ylim() == pytest.approx((0.0, 0.2))
    ax.set_ylim(0.1, 0.9)  # already wide: unchanged
    at_least_span(ax)
    assert ax.get_ylim() == pytest.approx((0.1, 0.9))
    plt.close(fig)


def test_the_best_value_per_metric_is_bold_and_marks_need_significance(report):
    text = report.with_suffix(".md").read_text()
    tau = next(line for line in text.splitlines() if line.startswith("| kendall_tau |"))
    identity_cell, first_stage_cell = tau.split(" | ")[2:4]
    assert first_stage_cell.startswith("**1.0000") and not identity_cell.startswith("**")
    first_stage_row = next(line for line in text.splitlines() if "| ndcg@10_first_stage |" in line)
    assert "**" not in first_stage_row  # no direction (and equal): nothing is best
    headline = [line for line in text.split("## Comparison")[0].splitlines() if line[:2] == "| "]
    assert not any(" \\*" in line for line in headline)  # 5 queries: none can be significant
    html = report.with_suffix(".html").read_text()
    assert "<strong>1.0000 [1.0000,\u00a01.0000]</strong>" in html


def test_ecdf_band_is_the_dkw_band():
    """Textbook DKW: n = 100, alpha = 0.05 gives half-width sqrt(ln(40) / 200) = 0.13581."""
    from harness.report.plots import ecdf_band

    values = np.linspace(0.0, 1.0, 100)[::-1]
    x, lower, upper = ecdf_band(values)
    assert np.all(np.diff(x) >= 0)
    ecdf = np.arange(1, 101) / 100
    half = np.sqrt(np.log(40.0) / 200.0)
    assert half == pytest.approx(0.135810, abs=1e-6)
    np.testing.assert_allclose(upper, np.minimum(ecdf + half, 1.0))
    np.testing.assert_allclose(lower, np.maximum(ecdf - half, 0.0))


def test_provenance_collapses_rows_every_run_shares(report):
    """Two runs of different rerankers on the same data: what differs is one table, what they
    share (dataset, queries, ...) is listed once in another."""
    from harness.report.load import load_runs
    from harness.report.tables import provenance_tables

    runs = load_runs([report.parent / "identity", report.parent / "first-stage"])
    differing, shared = provenance_tables(runs)
    assert differing.caption == "What differs" and shared.caption == "Shared by every run"
    assert "reranker" in [row[0] for row in differing.rows]
    assert "dataset" in [row[0] for row in shared.rows]
    assert all(len(row) == 2 for row in shared.rows)
    assert all(len(set(row[1:])) > 1 for row in differing.rows)
    (single,) = provenance_tables(runs[:1])
    assert len(single.rows) == len(differing.rows) + len(shared.rows)
