"""The run folder's typed, versioned format: version checks, upgrade, self-containment, export."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.files import dumps_json
from harness.metrics import registry
from harness.report.load import load_run
from harness.results.schema import FORMAT_VERSION, RANK_COUNTS, RunHeader, RunResults
from harness.results.store import QUERIES_FILE, RESULTS_FILE, RUN_FILE, read_queries, read_results
from harness.runner import execute_run, prepare_run
from tests.conftest import without_latency, write_rankgpt_folder

cli = CliRunner()
FORMAT_1_RUN = Path(__file__).parent / "fixtures" / "run-format-1"
# Format 2 as written before the rank-given-position counts (harness at bc31941): the matrix
# as rounded probabilities, every JSON number on its own line.
PROBABILITY_MATRIX_RUN = Path(__file__).parent / "fixtures" / "run-format-2-probabilities"


def _run(data: Path, out: Path, **overrides) -> RunResults:
    config = RunConfig(dataset=str(data), out=str(out), **overrides).validate()
    return execute_run(prepare_run(config))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_rankgpt_folder(tmp_path_factory.mktemp("format") / "data", candidates=8)


def _stable(results: RunResults) -> dict:
    """What must survive a write/read or an upgrade (latency and environment are measured)."""
    payload = results.to_dict()
    for key in ("environment", "wall_time_s", "finished", "created"):
        payload.pop(key, None)
    payload["reranker"].pop("source")
    return without_latency(payload)


def test_results_round_trip_through_their_typed_records(data, tmp_path):
    results = _run(data, tmp_path / "run", reranker="identity", perms=3)
    on_disk = read_results(tmp_path / "run")
    assert on_disk == RunResults.from_dict(results.to_dict())
    assert on_disk.to_dict()["format"] == FORMAT_VERSION
    # written row by row (to_streamed_dict), the file is the JSON of the plain results
    written = (tmp_path / "run" / RESULTS_FILE).read_text()
    assert written == dumps_json(results.to_dict(), default=str) + "\n"
    header = json.loads((tmp_path / "run" / RUN_FILE).read_text())
    assert RunHeader.from_dict(header).config_hash == results.header.config_hash
    # Per-order values: one per sample of each query, the reference order included.
    per_order = on_disk.per_order["q0"]
    assert per_order.order_index == (0, 1, 2, 3)
    assert set(per_order.values) == {"ndcg@10", "mrr@10"}
    mean = sum(per_order.values["ndcg@10"][1:]) / 3  # the reference stays out of the mean
    assert on_disk.per_query["q0"]["ndcg@10"] == pytest.approx(mean)
    assert on_disk.per_query["q0"]["ndcg@10_reference"] == per_order.values["ndcg@10"][0]
    queries = read_queries(tmp_path / "run")
    assert queries["q1"].doc_ids == tuple(f"q1-d{r:02d}" for r in range(1, 9))
    assert queries["q1"].text == "query number 1"
    assert queries["q1"].qrels["q1-d03"] == 1 + (3 + 1) % 3


def test_a_newer_format_is_refused_in_one_line(data, tmp_path):
    _run(data, tmp_path / "run", reranker="identity", perms=2)
    path = tmp_path / "run" / RESULTS_FILE
    payload = json.loads(path.read_text())
    payload["format"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(payload))
    with pytest.raises(HarnessError, match="by a newer harness") as error:
        read_results(tmp_path / "run")
    assert "\n" not in str(error.value)


def test_a_format_1_folder_is_sent_to_upgrade_and_upgraded_from_its_samples(tmp_path):
    old = tmp_path / "old"
    shutil.copytree(FORMAT_1_RUN, old)
    result = cli.invoke(app, ["report", str(old), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "harness upgrade" in result.output
    assert "Traceback" not in result.output
    gone = cli.invoke(app, ["upgrade", str(old)])  # the data it recorded is not here
    assert gone.exit_code == 2 and "dataset path not found" in gone.output

    # The same data, written again where it lives now: the fingerprint matches.
    data = write_rankgpt_folder(tmp_path / "data", candidates=8)
    samples_before = (old / "samples.jsonl").read_bytes()
    result = cli.invoke(app, ["upgrade", str(old), "--dataset", str(data)])
    assert result.exit_code == 0, result.output
    upgraded = read_results(old)
    assert (old / "samples.jsonl").read_bytes() == samples_before  # nothing reranked
    assert (old / QUERIES_FILE).is_file()
    # Every number of the format-1 results is unchanged, but those its 8-candidate lists
    # leave undefined (format 1 wrote "no bias" 0.0 and "perfect overlap" 1.0 there): now
    # NaN, with the reason recorded. Per-order values are new; the level is 1, as it meant.
    legacy = json.loads((FORMAT_1_RUN / RESULTS_FILE).read_text())
    short_list = {"top10_jaccard", "position_bias_mad"}
    for metric, entry in legacy["summary"].items():
        expected = math.nan if metric in short_list else entry["value"]
        assert upgraded.summary[metric].value == pytest.approx(expected, nan_ok=True)
    for query, row in legacy["per_query"].items():
        for metric, value in row.items():
            expected = math.nan if metric in short_list else value
            assert upgraded.per_query[query][metric] == pytest.approx(expected, nan_ok=True)
    assert upgraded.undefined["position_bias_mad"] == {registry.UNDEFINED_SHORT_LIST: 4}
    assert upgraded.relevance_level == 1 and "relevance_level" not in upgraded.config
    assert upgraded.header.config_hash == legacy["config_hash"]
    assert upgraded.environment == legacy["environment"]  # recorded provenance is kept
    assert set(upgraded.per_order) == set(legacy["per_query"])
    # And a fresh run of the same configuration agrees with it.
    fresh = _run(data, tmp_path / "fresh", reranker="identity", perms=3)
    assert _stable(fresh)["per_order"] == _stable(upgraded)["per_order"]
    again = cli.invoke(app, ["upgrade", str(old)])
    assert again.exit_code == 2 and "already in run format" in again.output


def test_report_and_gate_need_nothing_but_the_run_folder(tmp_path):
    data = write_rankgpt_folder(tmp_path / "data", candidates=8)
    _run(data, tmp_path / "sweep", reranker="identity", strategy="sweep")
    _run(data, tmp_path / "random", reranker="first-stage", perms=3)
    baseline = tmp_path / "baseline.json"
    assert (
        cli.invoke(app, ["baseline", str(tmp_path / "random"), "--to", str(baseline)]).exit_code
        == 0
    )
    shutil.rmtree(data)

    report = cli.invoke(
        app,
        [
            "report",
            str(tmp_path / "sweep"),
            str(tmp_path / "random"),
            "--out",
            str(tmp_path / "rep"),
        ],
    )
    assert report.exit_code == 0, report.output
    md = (tmp_path / "rep.md").read_text()
    assert "left out" not in md and "could not be reloaded" not in md
    assert (tmp_path / "rep_figures" / "lost_in_the_middle.png").is_file()
    assert (tmp_path / "rep_figures" / "ndcg_across_orders.png").is_file()
    gate = cli.invoke(app, ["gate", str(tmp_path / "random"), "--baseline", str(baseline)])
    assert gate.exit_code == 0, gate.output
    assert load_run(tmp_path / "sweep").queries["q2"].doc_ids[0] == "q2-d01"


def test_a_folder_with_the_older_probability_matrix_still_loads_reports_and_gates(tmp_path):
    import harness

    old = tmp_path / "old"
    shutil.copytree(PROBABILITY_MATRIX_RUN, old)
    legacy = json.loads((old / RESULTS_FILE).read_text())["position_bias"]
    assert "rank_given_position" in legacy and RANK_COUNTS not in legacy
    data = write_rankgpt_folder(tmp_path / "data", candidates=8)
    new = _run(data, tmp_path / "new", reranker="identity", perms=3)  # the same run, again
    assert RANK_COUNTS in new.position_bias and "rank_given_position" not in new.position_bias

    loaded = harness.load(old).results
    np.testing.assert_allclose(loaded.rank_given_position(), new.rank_given_position(), atol=1e-6)
    assert loaded.rank_given_position().shape == (8, 8)
    # the same values, but those 8 candidates leave undefined (written as 0.0 and 1.0 then)
    short_list = ("top10_jaccard", "top10_set_agreement", "position_bias_mad")
    legacy_rows = _stable(loaded)["per_query"]
    for query, row in _stable(new)["per_query"].items():
        assert all(row[m] is None for m in short_list)
        # invalid_share came later than that folder: it is 0 here and absent there
        assert row.pop("invalid_share") == 0.0 and "invalid_share" not in legacy_rows[query]
        assert {m: v for m, v in row.items() if m not in short_list} == {
            m: v for m, v in legacy_rows[query].items() if m not in short_list
        }
    # A report comparing both layouts draws both heatmaps; baselines and gates work across them.
    report = cli.invoke(
        app, ["report", str(old), str(tmp_path / "new"), "--out", str(tmp_path / "r")]
    )
    assert report.exit_code == 0, report.output
    assert (tmp_path / "r_figures" / "rank_given_position.png").is_file()
    for run, base in ((old, tmp_path / "new"), (tmp_path / "new", old)):
        baseline = tmp_path / f"{base.name}.json"
        made = cli.invoke(app, ["baseline", str(base), "--to", str(baseline)])
        assert made.exit_code == 0, made.output
        gate = cli.invoke(app, ["gate", str(run), "--baseline", str(baseline)])
        assert gate.exit_code == 0, gate.output


def test_results_json_is_compact_and_plain_json(data, tmp_path):
    """The matrix is integer counts, one row per line; vectors sit on one line each."""
    _run(data, tmp_path / "run", reranker="identity", perms=3)
    text = (tmp_path / "run" / RESULTS_FILE).read_text()
    counts = json.loads(text)["position_bias"][RANK_COUNTS]
    assert len(counts) == 8 and all(isinstance(c, int) for row in counts for c in row)
    rows = [line.strip().rstrip(",") for line in text.splitlines()]
    assert sum(json.loads(r) in counts for r in rows if r.startswith("[") and r != "[") == 8
    lone_values = [r for r in rows if r and not r.startswith(('"', "{", "}", "[", "]"))]
    assert lone_values == []  # json.dumps(indent=2) gives every number of a vector its own line


def test_trec_export_is_read_back_by_ranx_with_the_recorded_values(data, tmp_path):
    from ranx import Qrels, Run, evaluate

    results = _run(data, tmp_path / "run", reranker="identity", perms=3)
    out = tmp_path / "trec"
    exported = cli.invoke(app, ["export", str(tmp_path / "run"), "--trec", str(out)])
    assert exported.exit_code == 0, exported.output
    files = sorted(out.glob("order-*.trec"))
    assert [f.name for f in files] == [f"order-{i:03d}.trec" for i in range(4)]
    qrels = Qrels.from_file(str(out / "qrels.txt"), kind="trec")
    for index, path in enumerate(files):
        run = Run.from_file(str(path), kind="trec")
        scores = evaluate(qrels, run, "ndcg@10", return_mean=False)
        by_query = dict(zip(run.keys(), scores, strict=True))
        for query, per_order in results.per_order.items():
            recorded = per_order.values["ndcg@10"][per_order.order_index.index(index)]
            assert by_query[query] == pytest.approx(recorded, abs=1e-12)
    index_rows = (out / "orders.tsv").read_text().splitlines()
    assert index_rows[0] == "query_id\torder_index\tlabel\tfile"
    assert "q0\t0\treference\torder-000.trec" in index_rows
    assert len(index_rows) == 1 + results.counts["samples"]


def test_export_of_an_unwritable_place_is_one_line(data, tmp_path):
    _run(data, tmp_path / "run", reranker="identity", perms=2)
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = cli.invoke(app, ["export", str(tmp_path / "run"), "--trec", str(blocker / "sub")])
    assert result.exit_code == 2 and "cannot write the TREC export" in result.output
    assert "Traceback" not in result.output


def test_nan_values_survive_the_strict_json_round_trip(data, tmp_path):
    # One order per query: no pair of outputs, so every stability value is undefined (NaN),
    # and so is every spread across orders; 8 candidates leave position bias undefined.
    results = _run(data, tmp_path / "run", reranker="identity", strategy="identity")
    undefined = [m for row in results.per_query.values() for m, v in row.items() if v != v]
    assert sorted(set(undefined)) == [
        "best_relevant_rank_var", "distinct_rankings", "gpi", "kendall_tau", "ndcg@10_range",
        "ndcg@10_std", "parse_repair_rate", "position_bias_mad", "ppi", "rbo@10", "spearman",
        "tie_rate", "top10_jaccard", "top10_set_agreement", "top1_agreement",
    ]  # fmt: skip
    # the reasons are recorded (tie and repair rates are NaN because the reranker has no
    # scores and generates nothing, not by the design)
    assert set(results.undefined) == set(undefined) - {"parse_repair_rate", "tie_rate"}
    assert results.undefined["ndcg@10_range"] == {registry.UNDEFINED_ONE_ORDER: 4}
    assert results.undefined["kendall_tau"] == {registry.UNDEFINED_NO_PAIR: 4}
    assert results.undefined["position_bias_mad"] == {registry.UNDEFINED_SHORT_LIST: 4}
    assert read_results(tmp_path / "run").undefined == results.undefined
    text = (tmp_path / "run" / RESULTS_FILE).read_text()
    assert "NaN" not in text  # strict JSON: NaN is stored as null
    json.loads(text, parse_constant=lambda name: pytest.fail(f"non-strict JSON constant {name}"))
    reread = read_results(tmp_path / "run")
    for query, row in results.per_query.items():
        for metric, value in row.items():
            other = reread.per_query[query][metric]
            assert (math.isnan(value) and math.isnan(other)) or value == other


def test_a_bad_preset_stops_the_run_before_its_folder_is_written(data, tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("name: mine\nadapter: identity\nparams: {foo: 1}\n", encoding="utf-8")
    out = tmp_path / "run"
    with pytest.raises(HarnessError, match="unknown param 'foo'"):
        _run(data, out, reranker=str(preset), perms=2)
    assert not out.exists()
    preset.write_text("name: mine\nadapter: identity\n", encoding="utf-8")
    assert _run(data, out, reranker=str(preset), perms=2).counts["samples"] == 4 * 3


def test_run_refuses_to_resume_a_folder_of_a_newer_format(data, tmp_path):
    _run(data, tmp_path / "run", reranker="identity", perms=2)
    run_file = tmp_path / "run" / RUN_FILE
    newer = {**json.loads(run_file.read_text()), "format": FORMAT_VERSION + 1}
    run_file.write_text(json.dumps(newer))
    with pytest.raises(HarnessError, match="by a newer harness"):
        _run(data, tmp_path / "run", reranker="identity", perms=2)
    assert json.loads(run_file.read_text())["format"] == FORMAT_VERSION + 1  # left untouched


def test_a_malformed_section_of_results_is_one_line(data, tmp_path):
    _run(data, tmp_path / "run", reranker="identity", perms=2)
    path = tmp_path / "run" / RESULTS_FILE
    for key, value in (("reranker", 5), ("dataset", [1]), ("config", "x")):
        payload = json.loads(path.read_text())
        original = payload[key]
        payload[key] = value
        path.write_text(json.dumps(payload))
        with pytest.raises(HarnessError, match=f"'{key}' must be a JSON object"):
            read_results(tmp_path / "run")
        payload[key] = original
        path.write_text(json.dumps(payload))


def test_upgrade_keeps_the_recorded_run_and_needs_no_preset_file(tmp_path):
    old = tmp_path / "old"
    shutil.copytree(FORMAT_1_RUN, old)
    for name in (RUN_FILE, RESULTS_FILE):  # as if the run used a preset file since deleted
        payload = json.loads((old / name).read_text())
        payload["config"]["reranker"] = "/nonexistent/presets/identity.yaml"
        (old / name).write_text(json.dumps(payload))
    moved = write_rankgpt_folder(tmp_path / "moved-data", candidates=8)
    result = cli.invoke(app, ["upgrade", str(old), "--dataset", str(moved)])
    assert result.exit_code == 0, result.output
    upgraded = read_results(old)
    legacy = json.loads((FORMAT_1_RUN / RESULTS_FILE).read_text())
    assert upgraded.dataset.name == legacy["dataset"]["name"] == "data"
    assert upgraded.dataset.source == legacy["dataset"]["source"]
    assert upgraded.config["reranker"] == "/nonexistent/presets/identity.yaml"


def test_upgrade_refuses_other_data(tmp_path):
    old = tmp_path / "old"
    shutil.copytree(FORMAT_1_RUN, old)
    other = write_rankgpt_folder(tmp_path / "other", candidates=8, seed_text="passage")
    result = cli.invoke(app, ["upgrade", str(old), "--dataset", str(other)])
    assert result.exit_code == 2 and "is not the run's (fingerprint" in result.output
    assert not (old / QUERIES_FILE).exists()  # nothing written


def test_trec_export_of_a_sweep_holds_the_queries_shown_each_order(data, tmp_path):
    from ranx import Qrels, Run, evaluate

    results = _run(data, tmp_path / "run", reranker="identity", strategy="sweep")
    out = tmp_path / "trec"
    assert cli.invoke(app, ["export", str(tmp_path / "run"), "--trec", str(out)]).exit_code == 0
    qrels = Qrels.from_file(str(out / "qrels.txt"), kind="trec").to_dict()
    recorded = {
        (q, i): v
        for q, per_order in results.per_order.items()
        for i, v in zip(per_order.order_index, per_order.values["ndcg@10"], strict=True)
    }
    checked = 0
    for path in sorted(out.glob("order-*.trec")):
        index = int(path.stem.removeprefix("order-"))
        run = Run.from_file(str(path), kind="trec")
        subset = Qrels({q: qrels[q] for q in run.keys()})  # noqa: SIM118 - a ranx Run
        scores = evaluate(subset, run, "ndcg@10", return_mean=False)
        for query, value in zip(run.keys(), np.atleast_1d(scores), strict=True):
            assert value == pytest.approx(recorded[(query, index)], abs=1e-12)
            checked += 1
    assert checked == results.counts["samples"]
