"""The report's mitigation comparison: one table and one plot of effectiveness, stability and
cost; numbers straight from each run's results.json; Pareto front; meta-rerankers beside the
reranker they wrap."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.config import RunConfig
from harness.report.html import DATA_ELEMENT_ID
from harness.report.load import load_runs
from harness.report.mitigation import mitigation_rows, pareto_front
from harness.runner import execute_run, prepare_run
from tests.conftest import write_rankgpt_folder
from tests.test_meta_rerankers import _fake_presets, _preset

cli = CliRunner()


def mitigation_runs(root: Path, queries: int = 8) -> list[Path]:
    """A position-biased fake, PSC (m = 5) and bootstrapping (B = 3) over it, and the two
    controls, all on the same data and orders (8 queries: enough for a paired test to reach
    p < 0.05, whose floor is 2/2^n)."""
    data = write_rankgpt_folder(root / "data", queries=queries, candidates=6)
    presets = root / "presets"
    _fake_presets(presets)
    _preset(presets, "psc", "adapter: psc\nparams: {inner: primacy.yaml, shuffles: 5}\n")
    _preset(presets, "boot", "adapter: bootstrap\nparams: {inner: primacy.yaml, replicas: 3}\n")
    folders = []
    for name in ("identity", "psc", "first-stage", "primacy", "boot"):
        reranker = str(presets / f"{name}.yaml") if (presets / f"{name}.yaml").is_file() else name
        out = root / name
        config = RunConfig(reranker=reranker, dataset=str(data), perms=4, out=str(out)).validate()
        execute_run(prepare_run(config))
        folders.append(out)
    return folders


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> list[Path]:
    return mitigation_runs(tmp_path_factory.mktemp("mitigation"))


def test_rows_match_results_json_and_sit_beside_their_inner(folders):
    rows = mitigation_rows(load_runs(folders))
    assert [r.label for r in rows] == ["identity", "first-stage", "primacy", "psc", "boot"]
    for row, folder in zip(rows, [folders[i] for i in (0, 2, 3, 1, 4)], strict=True):
        summary = json.loads((folder / "results.json").read_text())["summary"]
        assert row.ndcg == summary["ndcg@10"]["value"]
        assert list(row.ndcg_ci) == summary["ndcg@10"]["ci95"]
        assert row.tau == summary["kendall_tau"]["value"]
        assert row.rbo == summary["rbo@10"]["value"]
        assert row.forward_passes == summary["forward_passes"]["value"]
        assert row.latency_ms_p50 == summary["latency_ms_p50"]["value"]
    by = {r.label: r for r in rows}
    assert by["psc"].inner_label == by["boot"].inner_label == "primacy"
    assert by["psc"].forward_passes == 5 * by["primacy"].forward_passes == 5
    assert by["boot"].forward_passes == 3
    assert by["psc"].tau > by["primacy"].tau
    # first-stage is invariant and costs nothing: nothing can dominate it
    assert by["first-stage"].pareto and by["first-stage"].tau == 1.0
    for row in rows:
        better = [
            o
            for o in rows
            if o is not row
            and o.ndcg >= row.ndcg
            and o.tau >= row.tau
            and o.forward_passes <= row.forward_passes
            and (o.ndcg, o.tau, -o.forward_passes) != (row.ndcg, row.tau, -row.forward_passes)
        ]
        assert row.pareto == (not better), row.label


def test_pareto_front_on_textbook_points():
    points = [(0.5, 0.5, 1.0), (0.6, 0.4, 1.0), (0.5, 0.5, 2.0), (0.4, 0.4, 0.5), (0.6, 0.6, 3.0)]
    assert pareto_front(points) == {0, 1, 3, 4}  # 2 is 0 at double the cost
    assert pareto_front([(0.5, float("nan"), 1.0), (0.1, 0.1, 9.0)]) == {1}
    assert pareto_front([(0.5, 0.5, 1.0), (0.5, 0.5, 1.0)]) == {0, 1}  # ties dominate nothing


def test_report_has_the_mitigation_section_table_plot_and_data(folders, tmp_path):
    out = tmp_path / "mitigation"
    result = cli.invoke(app, ["report", *map(str, folders), "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = out.with_suffix(".html").read_text(encoding="utf-8")
    markdown = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "Mitigation: effectiveness vs stability vs cost" in html
    assert "Mitigation: effectiveness vs stability vs cost" in markdown
    assert (tmp_path / "mitigation_figures" / "mitigation_pareto.png").is_file()
    data = json.loads(
        re.search(
            rf'<script type="application/json" id="{DATA_ELEMENT_ID}">(.*?)</script>', html, re.S
        ).group(1)
    )
    rows = {r["label"]: r for r in data["mitigation"]}
    assert set(rows) == {"identity", "psc", "first-stage", "primacy", "boot"}
    results = {r["label"]: r["results"]["summary"] for r in data["runs"]}
    for label, row in rows.items():
        assert row["tau"] == results[label]["kendall_tau"]["value"]
        assert row["forward_passes"] == results[label]["forward_passes"]["value"]
    # the Markdown table row of psc says what it wraps and its cost
    line = next(x for x in markdown.splitlines() if x.startswith("| psc |"))
    assert "| psc | psc | primacy |" in line and "| 5.00 |" in line
