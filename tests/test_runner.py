"""The spine end to end with the control rerankers: numbers, resume, provenance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.config import RunConfig
from harness.errors import HarnessError
from harness.rerankers.base import Reranker
from harness.rerankers.registry import build_reranker
from harness.results.schema import RunResults
from harness.results.store import SAMPLES_FILE
from harness.runner import execute_run, prepare_run
from tests.conftest import without_latency

STABLE_KEYS = ("summary", "per_query", "per_order", "position_bias", "config_hash")


def _run(folder: Path, out: Path, **overrides) -> RunResults:
    config = RunConfig(
        reranker=overrides.pop("reranker", "first-stage"),
        dataset=str(folder),
        perms=overrides.pop("perms", 10),
        out=str(out),
        **overrides,
    ).validate()
    return execute_run(prepare_run(config))


def _without_latency(results: RunResults) -> dict:
    """Everything that must be reproducible (latency is measured, so it is not)."""
    everything = results.to_dict()
    return without_latency(json.loads(json.dumps({k: everything[k] for k in STABLE_KEYS})))


def test_first_stage_is_invariant_and_identity_is_not(rankgpt_folder, tmp_path):
    first = _run(rankgpt_folder, tmp_path / "fs")
    ident = _run(rankgpt_folder, tmp_path / "id", reranker="identity")
    assert first.summary["kendall_tau"].value == 1.0
    assert first.summary["rbo@10"].value == pytest.approx(1.0)
    assert first.summary["ndcg@10_range"].value == 0.0
    assert ident.summary["kendall_tau"].value < 0.5
    assert ident.summary["ndcg@10_range"].value > 0.0
    # Copying the input means the item shown first is always output first.
    matrix = ident.rank_given_position()
    np.testing.assert_allclose(matrix, np.eye(len(matrix)))
    counts = ident.position_bias["rank_given_position_counts"]  # stored as exact integers
    assert all(isinstance(c, int) for row in counts for c in row)
    assert {sum(row) for row in counts} == {
        ident.position_bias["rank_given_position_queries"] * ident.permutations.random_orders
    }
    assert ident.summary["position_bias_mad"].value > first.summary["position_bias_mad"].value


def test_results_have_provenance_and_per_query_vectors(rankgpt_folder, tmp_path):
    results = _run(rankgpt_folder, tmp_path / "run", seed=3)
    for key in (
        "ndcg@10",
        "mrr@10",
        "kendall_tau",
        "rbo@10",
        "top1_agreement",
        "ndcg@10_range",
        "position_bias_mad",
        "latency_ms_p50",
        "latency_ms_p95",
    ):
        assert key in results.summary, key
    assert results.summary["ndcg@10"].ci95[0] <= results.summary["ndcg@10"].value
    assert set(results.per_query) == {"q0", "q1", "q2", "q3"}
    assert results.config["seed"] == 3
    assert results.dataset.fingerprint
    assert results.reranker.identity["adapter"] == "FirstStageReranker"
    assert "numpy" in results.environment["packages"]
    assert results.counts == {"queries": 4, "samples": 4 * 11}
    assert (tmp_path / "run" / "summary.md").read_text().startswith("# first-stage on data")


def test_same_command_gives_the_same_numbers(rankgpt_folder, tmp_path):
    a = _run(rankgpt_folder, tmp_path / "a", reranker="identity")
    b = _run(rankgpt_folder, tmp_path / "b", reranker="identity")
    assert _without_latency(a) == _without_latency(b)


def test_interrupted_run_resumes_to_the_same_result(rankgpt_folder, tmp_path):
    clean = _run(rankgpt_folder, tmp_path / "clean", reranker="identity", batch_size=3)

    calls = {"n": 0}

    def flaky_factory(preset, context):
        reranker = build_reranker(preset, context)
        original = reranker.rerank

        def rerank(cset, orders):
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt
            return original(cset, orders)

        reranker.rerank = rerank
        return reranker

    config = RunConfig(
        reranker="identity", dataset=str(rankgpt_folder), perms=10, batch_size=3
    ).validate()
    config = RunConfig(**{**config.to_dict(), "out": str(tmp_path / "resumed")})
    with pytest.raises(KeyboardInterrupt):
        execute_run(prepare_run(config), reranker_factory=flaky_factory)
    samples = tmp_path / "resumed" / SAMPLES_FILE
    assert len(samples.read_text().splitlines()) == 11  # batches of 3,3,3,2: query q0 finished
    with samples.open("a") as handle:
        handle.write('{"query_id": "q1", "order_ind')  # a torn line from a crash mid-write

    seen = []

    def counting_factory(preset, context):
        reranker = build_reranker(preset, context)
        original = reranker.rerank

        def rerank(cset, orders):
            seen.append(len(orders))
            return original(cset, orders)

        reranker.rerank = rerank
        return reranker

    resumed = execute_run(prepare_run(config), reranker_factory=counting_factory)
    assert sum(seen) == 4 * 11 - 11  # only what was missing was recomputed
    assert _without_latency(resumed) == _without_latency(clean)


def test_resume_refuses_a_different_configuration(rankgpt_folder, tmp_path):
    _run(rankgpt_folder, tmp_path / "run", perms=5)
    with pytest.raises(HarnessError, match="different configuration"):
        _run(rankgpt_folder, tmp_path / "run", perms=6)


def test_depth_and_queries_select_deterministically(rankgpt_folder, tmp_path):
    results = _run(rankgpt_folder, tmp_path / "run", queries=2, depth=5)
    assert list(results.per_query) == ["q0", "q1"]
    assert {v["n_candidates"] for v in results.per_query.values()} == {5}


def test_cyclic_strategy_gives_flat_exposure_for_an_invariant_reranker(rankgpt_folder, tmp_path):
    results = _run(rankgpt_folder, tmp_path / "run", strategy="cyclic")
    assert results.summary["position_bias_mad"].value == pytest.approx(0.0, abs=1e-12)
    assert results.counts["samples"] == 4 * 12


@pytest.mark.slow
def test_dl19_first_stage_matches_published_bm25(dl19_dir, tmp_path):
    results = _run(dl19_dir, tmp_path / "fs", perms=2)
    assert results.counts["queries"] == 43
    assert results.summary["ndcg@10"].value == pytest.approx(0.5058, abs=5e-4)
    assert results.summary["kendall_tau"].value == 1.0


@pytest.mark.slow
def test_dl19_identity_is_order_sensitive(dl19_dir, tmp_path):
    results = _run(dl19_dir, tmp_path / "id", reranker="identity", perms=5, queries=10)
    assert results.summary["kendall_tau"].value < 0.2
    # The identity order reproduces BM25; random orders are much worse.
    reference = results.summary["ndcg@10_reference"].value
    assert results.summary["ndcg@10"].value < reference - 0.1


def test_resume_refuses_a_different_reranker_identity(rankgpt_folder, tmp_path):
    out = tmp_path / "run"
    _run(rankgpt_folder, out, perms=3)
    (out / "samples.jsonl").write_text("")  # force work on resume
    (out / "reranker_identity.json").write_text('{"adapter": "SomethingElse"}')
    with pytest.raises(HarnessError, match=r"different model or prompt \(adapter"):
        _run(rankgpt_folder, out, perms=3)


def test_a_torn_last_line_that_parses_is_still_recomputed(rankgpt_folder, tmp_path):
    out = tmp_path / "run"
    clean = _run(rankgpt_folder, out, reranker="identity", perms=3)
    samples = out / "samples.jsonl"
    lines = samples.read_text().splitlines(keepends=True)
    samples.write_text("".join(lines[:-1]) + lines[-1].rstrip("\n"))  # crash before the newline
    resumed = _run(rankgpt_folder, out, reranker="identity", perms=3)
    assert _without_latency(resumed) == _without_latency(clean)
    assert samples.read_text().endswith("\n")
    assert len(samples.read_text().splitlines()) == len(lines)


def test_perms_does_not_split_a_non_random_run(rankgpt_folder, tmp_path):
    out = tmp_path / "run"
    first = _run(rankgpt_folder, out, strategy="cyclic", perms=5)
    samples = (out / SAMPLES_FILE).read_text()
    again = _run(rankgpt_folder, out, strategy="cyclic", perms=7)  # same run: resumes, no error
    assert (out / SAMPLES_FILE).read_text() == samples  # nothing recomputed or added
    assert _without_latency(again) == _without_latency(first)


def test_samples_of_another_run_are_refused_on_resume_naming_the_line(rankgpt_folder, tmp_path):
    _run(rankgpt_folder, tmp_path / "mine", reranker="identity", seed=0)
    _run(rankgpt_folder, tmp_path / "other", reranker="identity", seed=1)
    mine = tmp_path / "mine" / SAMPLES_FILE
    lines = mine.read_text().splitlines()
    foreign = (tmp_path / "other" / SAMPLES_FILE).read_text().splitlines()
    # Order 3 of q0 under seed 1 replaces the same key: identical shape, another shown order.
    row = next(i for i, line in enumerate(lines) if '"order_index":3,' in line)
    lines[row] = next(line for line in foreign if '"q0"' in line and '"order_index":3,' in line)
    mine.write_text("\n".join(lines) + "\n")
    with pytest.raises(HarnessError, match=rf"samples.jsonl:{row + 1}: .*another run"):
        _run(rankgpt_folder, tmp_path / "mine", reranker="identity", seed=0)
    lines[row] = lines[row].replace('"q0"', '"q9"')
    mine.write_text("\n".join(lines) + "\n")
    with pytest.raises(HarnessError, match="this run has no query 'q9'"):
        _run(rankgpt_folder, tmp_path / "mine", reranker="identity", seed=0)


def test_the_device_recorded_is_the_one_used(rankgpt_folder, tmp_path):
    results = _run(rankgpt_folder, tmp_path / "run", perms=2, device="cuda")
    assert results.config["device"] == "cuda"  # what was asked, part of the configuration
    assert results.environment["device_used"] == "none"  # first-stage computes on no device
    assert results.header.run_notes == (  # and the flag that had no effect is said
        "--device cuda has no effect: reranker 'first-stage' runs no model "
        "(recorded as device_used: none)",
    )
    assert _run(rankgpt_folder, tmp_path / "cpu", perms=2).header.run_notes == ()


@pytest.mark.parametrize(
    ("reranker", "device", "note"),
    [
        ("identity", "cuda:1", "reranker 'identity' runs no model (recorded as device_used: none)"),
        (
            "rankgpt-openai",
            "cuda",
            "reranker 'rankgpt-openai' computes on a server (recorded as device_used: remote)",
        ),
        ("lft", "cuda", None),  # a model in this process: the device is used, nothing to say
    ],
)
def test_a_device_the_reranker_does_not_use_is_noted(rankgpt_folder, reranker, device, note):
    config = RunConfig(reranker=reranker, dataset=str(rankgpt_folder), device=device)
    expected = () if note is None else (f"--device {device} has no effect: {note}",)
    assert prepare_run(config.validate()).notes == expected  # nothing is loaded or sent


def test_resuming_with_another_configuration_names_the_setting(rankgpt_folder, tmp_path):
    _run(rankgpt_folder, tmp_path / "run", reranker="identity", perms=3)
    with pytest.raises(HarnessError, match=r"perms: 3 -> 4"):
        _run(rankgpt_folder, tmp_path / "run", reranker="identity", perms=4)
    with pytest.raises(HarnessError, match=r"reranker name: 'identity' -> 'first-stage'"):
        _run(rankgpt_folder, tmp_path / "run", reranker="first-stage", perms=3)


def test_the_same_folder_written_two_ways_is_the_same_configuration(rankgpt_folder, monkeypatch):
    from harness.config import merge_config

    monkeypatch.chdir(rankgpt_folder.parent)
    name = rankgpt_folder.name
    given = [{"dataset": d, "reranker": "identity"} for d in (name, f"./{name}", f"{name}/")]
    assert {merge_config(None, g).dataset for g in given} == {name}
    irds = merge_config(None, {"dataset": "irds:a/b", "reranker": "identity"})
    assert irds.dataset == "irds:a/b"


def test_bad_data_stops_a_run_before_its_first_call(rankgpt_folder, tmp_path):
    class Picky(Reranker):
        """A fake that refuses query q2's data, as the control-token check would."""

        def check_data(self, candidate_set):
            if candidate_set.query_id == "q2":
                raise HarnessError("query 'q2': refused")

        def _rerank_batch(self, candidate_set, orders):
            raise AssertionError("no call may run before every set's data is checked")

    config = RunConfig(
        reranker="identity", dataset=str(rankgpt_folder), perms=2, out=str(tmp_path / "run")
    ).validate()
    with pytest.raises(HarnessError, match="query 'q2': refused"):
        execute_run(prepare_run(config), reranker_factory=lambda p, c: Picky("picky", c))
    samples = tmp_path / "run" / SAMPLES_FILE
    assert not samples.exists() or samples.read_text() == ""


def test_a_templates_file_counts_by_content_not_by_path(rankgpt_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.jsonl").write_text("[0, null, 2]\n")
    hashes = {
        prepare_run(
            RunConfig(
                reranker="identity", dataset=str(rankgpt_folder), strategy="templates",
                templates=path, out=str(tmp_path / "run"),
            ).validate()
        ).header.config_hash
        for path in ("t.jsonl", "./t.jsonl", str(tmp_path / "t.jsonl"))
    }  # fmt: skip
    assert len(hashes) == 1


def test_a_dry_run_leaves_a_torn_line_for_the_writer(tmp_path):
    from harness.results.store import RunStore

    (tmp_path / SAMPLES_FILE).write_text('{"query_id": "q0", "order_ind')
    store = RunStore(tmp_path)
    assert len(store.scan_samples(truncate=False)) == 0
    assert (tmp_path / SAMPLES_FILE).read_text() == '{"query_id": "q0", "order_ind'
    store.scan_samples()
    assert (tmp_path / SAMPLES_FILE).read_text() == ""
