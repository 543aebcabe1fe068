"""A metric added from outside the package: one registry entry with its kernel, computed by a
run (CLI ``--metrics-module`` or the Python API), recorded in results.json, shown by the report
and gated by the gate, all without importing its module again."""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import harness
from harness.cli import app
from harness.errors import HarnessError
from harness.metrics.registry import BUILTIN, MetricSpec, load_modules, recorded
from harness.results.store import read_results
from tests.conftest import write_rankgpt_folder

cli = CliRunner()
MODULE = "harness_test_user_metrics"  # a name no other test imports

# A user's module: two metrics, one gated by default, one with a noise floor.
SOURCE = '''
from harness import MetricSpec, QueryOrders


def top1_relevant(q: QueryOrders) -> float:
    """Share of the design's outputs whose top candidate is judged relevant."""
    tops = [ranking[0] in q.relevant for ranking in q.rankings(q.design)]
    return sum(tops) / len(tops) if tops else float("nan")


def top3_overlap(q: QueryOrders) -> float:
    """Mean over pairs of compared outputs of |top-3 & top-3| / 3."""
    tops = [set(r[:3]) for r in q.rankings(q.compared)]
    pairs = [len(a & b) / 3 for i, a in enumerate(tops) for b in tops[i + 1 :]]
    return sum(pairs) / len(pairs)


METRICS = [
    MetricSpec(
        "top1_relevant", "outputs with a relevant candidate on top", "higher",
        headline=True, compared=True, gate_margin=0.05, kernel=top1_relevant,
    ),
    MetricSpec(
        "top3_overlap", "overlap of the top-3 sets", "higher", floor="pairs",
        undefined_when=("no pair", "one candidate"), kernel=top3_overlap,
    ),
]
'''


def relevant_first(query: str, docs: list[str]) -> list[float]:
    """Scores the fixture's judged-relevant documents (every third rank) first."""
    ranks = [int(re.search(r"\d+", doc).group()) for doc in docs]
    return [float(rank % 3 == 0) - rank / 100 for rank in ranks]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("user-metrics")
    data = write_rankgpt_folder(root / "data", queries=6, candidates=12)
    package = root / "plugins"
    package.mkdir()
    (package / f"{MODULE}.py").write_text(textwrap.dedent(SOURCE), encoding="utf-8")
    sys.path.insert(0, str(package))
    try:
        module = __import__(MODULE)
        # Python API, the specs themselves: relevant documents on top
        good = harness.evaluate(
            relevant_first, dataset=str(data), perms=4, repeats=1, out=root / "good",
            metrics=module.METRICS,
        ).run_dir  # fmt: skip
        # CLI, the module path: first-stage order, whose top candidate is never relevant
        result = cli.invoke(app, [
            "run", "--reranker", "first-stage", "--dataset", str(data), "--perms", "4",
            "--metrics-module", MODULE, "--out", str(root / "worse"),
        ])  # fmt: skip
        assert result.exit_code == 0, result.output
    finally:
        sys.path.remove(str(package))
        sys.modules.pop(MODULE, None)
    # From here on the module cannot be imported: readers use what the results record.
    (package / f"{MODULE}.py").unlink()
    baseline = root / "good.json"
    result = cli.invoke(app, ["baseline", str(good), "--to", str(baseline)])
    assert result.exit_code == 0, result.output
    return {"data": data, "good": good, "worse": root / "worse", "baseline": baseline}


def _tops(ranking_lists) -> float:
    return sum(r[0] for r in ranking_lists) / len(ranking_lists)


def test_results_record_the_metric_its_spec_and_its_noise_floor(runs):
    good = json.loads((runs["good"] / "results.json").read_text())
    worse = json.loads((runs["worse"] / "results.json").read_text())
    assert good["summary"]["top1_relevant"]["value"] == 1.0
    assert worse["summary"]["top1_relevant"]["value"] == 0.0
    assert all(row["top1_relevant"] == 1.0 for row in good["per_query"].values())
    spec = {s["name"]: s for s in good["metrics"]}["top1_relevant"]
    assert spec["direction"] == "higher" and spec["gate_margin"] == 0.05 and spec["headline"]
    assert "kernel" not in spec
    # the floor: the identity order and its rerun of a deterministic function agree fully
    assert good["noise_floor"]["summary"]["top3_overlap"]["value"] == 1.0
    # the built-ins are untouched by the added metrics
    assert list(good["summary"])[: len(BUILTIN.summarized())] == [
        s.name for s in BUILTIN.summarized()
    ]


def test_top3_overlap_matches_a_direct_count(runs):
    """The kernel's per-query value against the overlap counted from samples.jsonl."""
    results = read_results(runs["worse"])
    samples = [json.loads(line) for line in (runs["worse"] / "samples.jsonl").open()]
    for query_id in results.query_ids:
        rankings = [
            s["ranking"] for s in samples if s["query_id"] == query_id and s["order_index"] > 0
        ]
        pairs = [len(set(a[:3]) & set(b[:3])) / 3 for a, b in itertools.combinations(rankings, 2)]
        assert math.isclose(results.vector("top3_overlap")[query_id], sum(pairs) / len(pairs))


def test_report_shows_the_metric_without_its_module(runs, tmp_path, monkeypatch):
    # no figures: they cost most of a report's time here and are tested in test_report.py
    monkeypatch.setattr("harness.report.build.build_figures", lambda runs: ([], [], {}))
    out = tmp_path / "report"
    result = cli.invoke(app, ["report", str(runs["good"]), str(runs["worse"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    markdown = out.with_suffix(".md").read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| top1_relevant |"))
    assert "outputs with a relevant candidate on top" in row
    assert "top1_relevant" in out.with_suffix(".html").read_text()
    summary = (runs["good"] / "summary.md").read_text()
    assert "| top1_relevant | 1.0000 |" in summary


def test_gate_fails_a_drop_beyond_the_metrics_margin_and_gates_it_by_default(runs):
    gate = ["gate", "--baseline", str(runs["baseline"])]
    failed = cli.invoke(app, [*gate, str(runs["worse"]), "--max-drop", "top1_relevant=0.05"])
    assert failed.exit_code == 1, failed.output
    assert re.search(r"top1_relevant ↑.*FAIL", failed.output), failed.output
    # the same drop within a margin that allows it passes: the margin decides
    allowed = ["--max-drop", "top1_relevant=1", "--floor", "top1_relevant=1"]
    passed = cli.invoke(app, [*gate, str(runs["worse"]), *allowed])
    assert passed.exit_code == 0, passed.output
    # with no --max-drop the default gates include it (its spec's gate_margin)
    default = cli.invoke(app, [*gate, str(runs["good"])])
    assert default.exit_code == 0, default.output
    assert "top1_relevant ↑" in default.output and "ndcg@10" in default.output


def test_an_added_metric_is_checked_where_it_is_declared(tmp_path, monkeypatch):
    spec = MetricSpec("mine", "a value", "higher", kernel=lambda q: 1.0)
    with pytest.raises(HarnessError, match="already registered"):
        BUILTIN.with_metrics(spec, spec)
    with pytest.raises(HarnessError, match="already registered"):
        BUILTIN.with_metrics(MetricSpec("kendall_tau", "x", "higher", kernel=lambda q: 1.0))
    with pytest.raises(HarnessError, match="no kernel"):
        BUILTIN.with_metrics(MetricSpec("mine", "a value", "higher"))
    with pytest.raises(HarnessError, match="per_order"):
        BUILTIN.with_metrics(MetricSpec("mine", "x", "higher", per_order=True, kernel=len))
    with pytest.raises(HarnessError, match="mean over queries"):
        BUILTIN.with_metrics(
            MetricSpec("mine", "x", "higher", summary="pooled over queries", kernel=len)
        )
    with pytest.raises(HarnessError, match="undefined_when"):
        BUILTIN.with_metrics(MetricSpec("mine", "x", "higher", undefined_when=("never",)))
    with pytest.raises(HarnessError, match="gate_margin needs a direction"):
        BUILTIN.with_metrics(MetricSpec("mine", "x", "neither", gate_margin=0.1, kernel=len))
    with pytest.raises(HarnessError, match="cannot import"):
        load_modules("no_such_module_anywhere")
    (tmp_path / "empty_metrics_module.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(HarnessError, match="defines no METRICS"):
        load_modules("empty_metrics_module")
    # the built-ins alone: what a run folder written before added metrics reads as
    assert recorded(None) == BUILTIN and BUILTIN.with_metrics() == BUILTIN
    # a recorded spec round-trips (without its kernel)
    assert MetricSpec.from_dict(spec.to_dict()) == spec


def test_a_kernel_that_returns_no_number_is_named(rankgpt_folder, tmp_path):
    bad = MetricSpec("bad", "x", "higher", kernel=lambda q: "high")
    with pytest.raises(HarnessError, match="'bad': its kernel returned 'high'"):
        harness.evaluate("identity", dataset=str(rankgpt_folder), perms=2, out=tmp_path / "r",
                         metrics=[bad])  # fmt: skip


def test_a_run_yaml_names_modules_as_a_list_outside_the_config_hash(tmp_path):
    from harness.config import merge_config
    from harness.options import NOT_IDENTITY

    config = tmp_path / "run.yaml"
    config.write_text("reranker: identity\nmetrics_module: [pkg.one, pkg.two]\n")
    assert merge_config(config, {}).metrics_module == "pkg.one,pkg.two"
    assert "metrics_module" in NOT_IDENTITY  # adding a metric reranks nothing
