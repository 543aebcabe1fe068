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
from harness.errors import HarnessError
from harness.report.html import DATA_ELEMENT_ID
from harness.report.load import load_runs
from harness.report.mitigation import (
    MitigationRow,
    front_by_stability_measure,
    mitigation_rows,
    pareto_front,
    recommend,
)
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


def test_what_to_use_picks_within_the_budget_with_the_paired_evidence(folders):
    runs = load_runs(folders)
    rows = mitigation_rows(runs)
    by_label = {r.label: r for r in runs}
    found = recommend(runs, rows, budget=3, objective="stability")
    # within 3 forward passes: first-stage (tau 1, free) beats boot (3 passes), psc costs 5
    assert (found.choice, found.runner_up, found.queries) == ("first-stage", "boot", 8)
    tau = next(e for e in found.evidence if e.metric == "kendall_tau")
    a, b = (
        by_label["boot"].per_query("kendall_tau"),
        by_label["first-stage"].per_query("kendall_tau"),
    )
    diffs = [b[q] - a[q] for q in by_label["boot"].query_ids]
    assert tau.diff == pytest.approx(sum(diffs) / len(diffs))
    assert tau.wins == sum(d > 1e-9 for d in diffs) and tau.p_value < 0.05 and found.decided
    assert "use first-stage. It beats boot on kendall_tau by" in found.paragraphs[0]
    # nothing within a budget below every run's cost; one run within it: nothing to choose
    assert "No run costs at most" in recommend(runs, rows, budget=-1).paragraphs[0]
    only = recommend(runs, [r for r in rows if r.label in ("primacy", "psc")], budget=1)
    assert (
        only.choice == "primacy" and not only.decided and "nothing to choose" in only.paragraphs[0]
    )
    with pytest.raises(HarnessError, match="--objective"):
        recommend(runs, rows, objective="speed")


def test_what_to_use_says_not_enough_queries_to_choose(tmp_path):
    """Two queries: no paired test can reach p < 0.05 (2/2^2 = 0.5), and the report says so."""
    data = write_rankgpt_folder(tmp_path / "data", queries=2, candidates=6)
    folders = []
    for name in ("identity", "first-stage"):
        config = RunConfig(reranker=name, dataset=str(data), perms=4, out=str(tmp_path / name))
        execute_run(prepare_run(config.validate()))
        folders.append(tmp_path / name)
    out = tmp_path / "few"
    result = cli.invoke(
        app, ["report", *map(str, folders), "--out", str(out), "--objective", "effectiveness"]
    )
    assert result.exit_code == 0, result.output
    markdown = out.with_suffix(".md").read_text(encoding="utf-8")
    section = markdown.split("### What to use")[1].split("\n### ")[0]
    assert "not enough queries to choose. With 2 queries" in section
    assert "2/2^2 = 0.5" in section
    assert (tmp_path / "few_figures" / "tables" / "what-to-use.tex").is_file()


def test_front_by_stability_measure_names_the_runs_it_moves():
    def row(label: str, ndcg: float, tau: float, rbo: float, cost: float) -> MitigationRow:
        nan = (float("nan"), float("nan"))
        return MitigationRow(label, label, label, "", "", ndcg, nan, tau, nan, rbo, nan, cost, 0)

    # b is less stable than a on tau but more on RBO, at the same effectiveness and cost
    rows = [row("a", 0.5, 0.8, 0.90, 1.0), row("b", 0.5, 0.7, 0.95, 1.0)]
    text = front_by_stability_measure(rows)
    assert text is not None
    assert "b is on the front by RBO@10 but dominated by Kendall tau" in text
    assert "a is on the front by Kendall tau but dominated by RBO@10" in text
    assert front_by_stability_measure([row("a", 0.5, 0.8, 0.9, 1.0)]) is None
