"""`harness report`: one self-contained HTML page and a Markdown twin, built from run folders."""

from __future__ import annotations

import base64
import json
import re
import struct
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.report import plots
from harness.report.compare import comparability, compare_runs, incomparable_reason, moved_most
from harness.report.exports import latex_escape
from harness.report.html import DATA_ELEMENT_ID
from harness.report.load import load_run, load_runs
from harness.report.series import RunPoint, SweepCurve, sweep_curve
from harness.runner import execute_run, prepare_run
from tests.conftest import write_rankgpt_folder

cli = CliRunner()


def _run(data: Path, out: Path, **overrides) -> Path:
    config = RunConfig(dataset=str(data), out=str(out), perms=4, **overrides).validate()
    execute_run(prepare_run(config))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report-runs")
    # 12 candidates: more than the top 10, so position bias (and its plots) is defined
    data = write_rankgpt_folder(root / "data", queries=4, candidates=12)
    return {
        "data": data,
        "identity": _run(data, root / "identity", reranker="identity"),
        "first-stage": _run(data, root / "first-stage", reranker="first-stage"),
        "sweep": _run(data, root / "sweep", reranker="identity", strategy="sweep"),
    }


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("report") / "three"
    args = ["report", str(runs["identity"]), str(runs["first-stage"]), str(runs["sweep"])]
    result = cli.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return {"html": out.with_suffix(".html"), "md": out.with_suffix(".md"), "stem": out}


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; AssertionError if it is not a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_html_is_self_contained_with_images_and_embedded_data(report):
    html = report["html"].read_text(encoding="utf-8")
    images = re.findall(r'<img [^>]*src="data:image/svg\+xml;base64,([^"]+)"', html)
    # the sweep run adds the lost-in-the-middle curve; the two runs it leaves comparable, the
    # mitigation plot
    assert len(images) == 8
    for encoded in images:
        svg = ElementTree.fromstring(base64.b64decode(encoded))
        assert svg.tag.endswith("svg") and svg.get("width", "").endswith("pt")
    # Nothing to fetch: every src is inline data; every href an in-page anchor or one of the
    # report's own files (figures as SVG/PDF/PNG, tables as LaTeX/CSV); no url(...) in CSS.
    assert all(src.startswith("data:") for src in re.findall(r'\bsrc\s*=\s*"([^"]*)"', html))
    links = re.findall(r'\bhref\s*=\s*"([^"]*)"', html)
    assert links and all(link.startswith(("#", "three_figures/")) for link in links)
    for link in (link for link in links if not link.startswith("#")):
        assert (report["stem"].parent / link).is_file(), link
    assert "url(" not in html and "@import" not in html
    assert "Content-Security-Policy" in html
    match = re.search(
        rf'<script type="application/json" id="{DATA_ELEMENT_ID}">(.*?)</script>', html, re.S
    )
    data = json.loads(match.group(1))
    assert [r["label"] for r in data["runs"]] == [
        "identity (identity)",
        "first-stage",
        "identity (sweep)",
    ]
    assert data["runs"][1]["results"]["summary"]["kendall_tau"]["value"] == 1.0
    # identity and first-stage share queries and strategy; the sweep run is left out, not
    # the whole comparison
    assert data["comparable"] is False
    assert "permutation strategy differs" in data["incomparable_reason"]
    assert data["comparable_groups"] == [["identity (identity)", "first-stage"]]
    assert [r["label"] for r in data["not_compared"]] == ["identity (sweep)"]
    assert {(c["a"], c["b"]) for c in data["comparisons"]} == {
        ("identity (identity)", "first-stage")
    }


def test_html_and_markdown_say_the_same_thing(report):
    html = report["html"].read_text(encoding="utf-8")
    md = report["md"].read_text(encoding="utf-8")
    for title in ("Runs", "Headline", "Comparison", "Plots", "Queries whose ranking moved most"):
        assert f"<h2>{title}</h2>" in html and f"### {title}" in md
    for text in ("| kendall_tau | stability (1 = order-invariant) |", "| permutations |"):
        assert text in md
    figures = sorted(report["stem"].parent.glob("three_figures/*.png"))
    assert len(figures) == 8
    for figure in figures:
        assert f"(three_figures/{figure.name})" in md
        svg, pdf = figure.with_suffix(".svg"), figure.with_suffix(".pdf")
        assert svg.read_bytes().lstrip().startswith(b"<?xml") and b"<svg" in svg.read_bytes()
        assert pdf.read_bytes().startswith(b"%PDF-")
    # no title baked into the image: the caption outside it says what it shows
    assert (
        b"Effectiveness across input orders"
        not in (report["stem"].parent / "three_figures" / "ndcg_across_orders.svg").read_bytes()
    )
    assert "Effectiveness across input orders" not in md


def test_comparison_of_runs_on_the_same_queries(runs):
    loaded = load_runs([runs["identity"], runs["first-stage"]])
    assert incomparable_reason(loaded) is None
    rows = {row.metric: row for row in compare_runs(loaded)}
    tau = rows["kendall_tau"]
    assert (tau.a, tau.b, tau.n) == ("identity", "first-stage", 4)
    assert tau.diff > 0.5 and (tau.wins, tau.ties, tau.losses) == (4, 0, 0)
    assert tau.p_value == pytest.approx(2 / 16)  # two-sided exact sign-flip test, n = 4
    assert tau.p_holm >= tau.p_value
    assert compare_runs(loaded) == compare_runs(loaded)  # seeded: same numbers every time
    moved = moved_most(loaded[0], k=2)
    assert len(moved) == 2 and moved[0].kendall_tau <= moved[1].kendall_tau
    assert moved[0].text.startswith("query number")


def test_sweep_curve_of_the_identity_reranker_is_the_diagonal(runs):
    curve = sweep_curve(load_run(runs["sweep"]))
    assert curve is not None
    np.testing.assert_array_equal(curve.positions, np.arange(1, 13))
    np.testing.assert_array_equal(curve.mean_rank, curve.positions)  # output copies input


def test_not_a_finished_run_is_a_clear_error(tmp_path, runs):
    with pytest.raises(HarnessError, match="not a run folder"):
        load_run(tmp_path)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "run.json").write_text("{}")
    result = cli.invoke(app, ["report", str(runs["identity"]), str(unfinished)])
    assert result.exit_code == 2 and "unfinished run" in result.output
    assert "Traceback" not in result.output


def test_plot_functions_return_png_svg_and_pdf():
    labels = ("a", "b")
    rng = np.random.default_rng(0)
    curve = SweepCurve(np.arange(1, 6), np.arange(1, 6.0), np.linspace(0.5, 0.3, 5), np.ones(5))
    images = [
        plots.ndcg_across_orders(
            {k: rng.random(6) for k in labels}, {"a": 0.5}, {k: rng.random(3) for k in labels}
        ),
        plots.ndcg_across_orders({}, {}, {k: rng.random(3) for k in labels}),
        plots.stability_ecdf(
            {k: rng.random(5) for k in labels}, {k: rng.random(5) for k in labels}
        ),
        plots.rank_heatmaps({k: np.eye(5) for k in labels}),
        plots.exposure_by_position({"a": [1.0, 0.0]}, {"a": [0.5, 0.5]}, k=1),
        plots.lost_in_the_middle({"a": curve}),
        plots.latency_per_run({k: rng.random(8) for k in labels}),
        plots.stability_vs_effectiveness({"a": RunPoint(0.5, (0.4, 0.6), 0.9, (0.8, 1.0))}),
    ]
    for image in images:
        width, height = png_size(image.png)
        assert width > 600 and height > 400  # 200 dpi: a 3.5 in column is 700 px
        assert b"<svg" in image.svg and image.pdf.startswith(b"%PDF-")
        assert image.width_in in (plots.ONE_COLUMN, plots.TWO_COLUMNS)
    again = plots.latency_per_run({k: np.arange(1.0, 9.0) for k in labels})
    assert again == plots.latency_per_run({k: np.arange(1.0, 9.0) for k in labels})


def test_cli_import_stays_light():
    code = (
        "import sys, harness.cli; print([m for m in ('matplotlib', 'scipy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_default_output_is_under_reports(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli.invoke(app, ["report", str(runs["first-stage"])])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "reports" / "first-stage.html").is_file()


def test_three_runs_where_one_differs_still_compare_the_two_that_match(runs, tmp_path):
    """One run on other queries is left out, by name and why; the two that match are compared."""
    fewer = _run(runs["data"], tmp_path / "fewer", reranker="identity", queries=3)
    folders = [runs["identity"], fewer, runs["first-stage"]]
    loaded = load_runs(folders)
    found = comparability(loaded)
    same, other, first_stage = (r.label for r in loaded)
    assert found.groups == ((same, first_stage),)
    assert [label for label, _ in found.left_out] == [other]
    assert "query sets differ" in found.left_out[0][1] and "3 shared" in found.left_out[0][1]
    out = tmp_path / "three"
    result = cli.invoke(app, ["report", *map(str, folders), "--out", str(out)])
    assert result.exit_code == 0, result.output
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    comparison = md.split("### Comparison")[1].split("\n### ")[0]
    assert f"| kendall_tau | {first_stage} - {same} |" in comparison
    assert not [row for row in comparison.splitlines() if row.startswith("|") and other in row]
    assert f"Left out: {other}: query sets differ" in comparison
    # the comparison table as LaTeX (booktabs), its significance mark a superscript
    latex = (tmp_path / "three_figures" / "tables" / "comparison.tex").read_text()
    assert "\\toprule" in latex and "\\midrule" in latex and "\\bottomrule" in latex
    assert f"kendall\\_tau & first-stage - {latex_escape(same)}" in latex
    csv_rows = (tmp_path / "three_figures" / "tables" / "comparison.csv").read_text()
    assert csv_rows.startswith("metric,pair (B - A),mean A,mean B,")


def test_near_identical_no_bias_bands_are_one_legend_entry():
    """Two runs whose no-bias 95% bands differ by half a percentage point: one band, one label
    (text stays text in the SVG, so the legend can be read back)."""
    exposure = {"a": [0.9, 0.5, 0.1, 0.5], "b": [0.8, 0.5, 0.2, 0.5]}
    expected = {"a": [0.5] * 4, "b": [0.5] * 4}
    low, high = [0.30, 0.30, 0.30, 0.30], [0.70, 0.70, 0.70, 0.70]
    near = {"a": (low, high), "b": ([v + 0.005 for v in low], [v - 0.005 for v in high])}
    svg = plots.exposure_by_position(exposure, expected, bands=near).svg.decode()
    assert svg.count("no-bias 95% range") == 1 and "(per run)" not in svg
    far = {"a": (low, high), "b": ([0.1] * 4, [0.9] * 4)}  # another design: both drawn
    svg = plots.exposure_by_position(exposure, expected, bands=far).svg.decode()
    assert svg.count("no-bias 95% range (per run)") == 1


def test_mitigation_plot_keeps_ndcg_at_or_above_zero_and_labels_each_cost():
    from harness.report.mitigation import MitigationRow

    rows = [
        MitigationRow(
            "a", "a", "a", "", "", 0.05, (-0.1, 0.2), 0.2, (0.1, 0.3), 0.8, (0.7, 0.9), 0.0, 1.0
        ),
        MitigationRow(
            "b", "b", "b", "", "", 0.30, (0.1, 0.5), 0.9, (0.8, 1.0), 0.9, (0.8, 1.0), 5.0, 9.0
        ),
        MitigationRow(
            "c", "c", "c", "", "", 0.20, (0.1, 0.3), 0.5, (0.4, 0.6), 0.9, (0.8, 1.0), 20.0, 9.0
        ),
    ]
    svg = plots.mitigation_pareto(rows).svg.decode()
    ticks = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert {"0", "5", "20"} <= set(ticks)  # each cost the runs have, not only the decades
    fig = plots.mitigation_pareto.__wrapped__(rows)  # the drawn Figure, before rendering
    ndcg, tau = fig.axes[0].get_ylim(), fig.axes[1].get_ylim()
    assert ndcg[0] == 0.0 and ndcg[1] > 0.5  # a's interval reaches -0.1: NDCG stops at 0
    assert -1.0 <= tau[0] < 0.1 and tau[1] <= 1.04
