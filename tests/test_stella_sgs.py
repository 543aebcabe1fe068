"""STELLA's calibration -> artifact -> inference round trip and its refusals, and SGS."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.config import RunConfig
from harness.data.model import CandidateSet
from harness.errors import HarnessError
from harness.rerankers.base import CallFacts, Reranker, RerankOutput, RunContext
from harness.rerankers.debiasers.sgs import StochasticGreedySelection
from harness.rerankers.debiasers.stella import Stella, StellaArtifact
from harness.rerankers.registry import build_reranker, check_preset, load_preset
from harness.runner import execute_run, prepare_run
from tests.conftest import write_rankgpt_folder
from tests.test_meta_rerankers import _cset, _fake_presets, _preset

CONTEXT = RunContext(batch_size=4)
cli = CliRunner()


class OracleReranker(Reranker):
    """Order-invariant: always the first-stage order (its top pick is the first-stage best)."""

    def _rerank_batch(self, candidate_set: CandidateSet, orders: np.ndarray) -> list[RerankOutput]:
        facts = CallFacts(latency_ms=1.0, call_latency_ms=1.0, forward_passes=1)
        return [RerankOutput(candidate_set.doc_ids, facts) for _ in orders]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_rankgpt_folder(tmp_path / "data", queries=6, candidates=6)


def _calibrate(data: Path, presets: Path, out: Path, *extra: str) -> None:
    args = ["stella-calibrate", "--reranker", str(presets / "primacy.yaml"), "--dataset"]
    args += [str(data), "--probe-queries", "2", "--repeats", "2", "--out", str(out), *extra]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output


def test_calibration_artifact_inference_round_trip(data, tmp_path):
    presets = tmp_path / "presets"
    _fake_presets(presets)
    artifact = presets / "stella.json"
    _calibrate(data, presets, artifact)
    saved = StellaArtifact.load(artifact)
    provenance = saved.provenance
    assert provenance["candidate_count"] == 6 and saved.size == 6
    assert provenance["probe_query_ids"] == ["q4", "q5"]  # the last two: held out
    assert provenance["reranker"]["adapter"] == "tests.test_meta_rerankers:PrimacyReranker"
    # PrimacyReranker always picks the item shown first: every count lands in column 0
    counts = np.array(saved.counts)
    assert counts[:, 1:].sum() == 0 and counts[:, 0].sum() == provenance["inner_calls"]
    assert np.allclose(saved.matrix.sum(axis=1), 1.0)
    stella = _preset(
        presets, "stella", "adapter: stella\nparams: {inner: primacy.yaml, artifact: stella.json}\n"
    )
    config = RunConfig(
        reranker=str(stella), dataset=str(data), queries=3, perms=3, out=str(tmp_path / "run")
    ).validate()
    prepared = prepare_run(config)
    results = execute_run(prepared)
    sets = {s.query_id: s for s in prepared.dataset.sets}
    identity = results.reranker.identity
    assert identity["method"] == "stella"
    assert identity["calibration"]["candidate_count"] == 6
    assert len(identity["calibration"]["matrix_sha256"]) == 64
    from harness.results.store import iter_samples

    for sample in iter_samples(tmp_path / "run"):
        # a column-0 likelihood is flat: the posterior stays uniform, so STELLA converges after
        # 1 + convergence_steps calls and falls back to the raw first output
        assert sample.facts["extra"]["fallback_to_raw"] is True
        assert sample.facts["forward_passes"] == 4
        assert sample.ranking[0] == sets[sample.query_id].doc_ids[sample.shown[0]]


def test_stella_posterior_follows_the_matrix(tmp_path):
    n = 5
    matrix = np.full((n, n), 0.1 / (n - 1)) + np.eye(n) * (0.9 - 0.1 / (n - 1))
    oracle = OracleReranker("oracle", CONTEXT)
    from harness.rerankers.debiasers.stella import StellaParams, bound_provenance
    from harness.rerankers.preset import RerankerPreset

    inner_preset = RerankerPreset(name="oracle", adapter="tests.test_stella_sgs:OracleReranker")
    artifact = StellaArtifact(
        transition_matrix=tuple(tuple(r) for r in matrix.tolist()),
        counts=(),
        provenance={**bound_provenance(inner_preset, oracle, n), "probe_query_ids": ["probe"]},
    )
    params = StellaParams(inner="oracle", artifact="unused.json", max_updates=6)
    stella = Stella("stella", CONTEXT, oracle, inner_preset, params, artifact=artifact)
    cset = _cset(n)
    outputs = stella.rerank(cset, np.array([[4, 3, 2, 1, 0], [2, 0, 4, 1, 3]]))
    for output in outputs:
        assert output.ranking == cset.doc_ids
        assert output.facts.extra["fallback_to_raw"] is False
        assert output.scores is not None and output.scores["d0"] > 0.99
    with pytest.raises(HarnessError, match="was a STELLA probe query"):
        stella.rerank(_cset(n, query_id="probe"), np.array([np.arange(n)]))
    with pytest.raises(HarnessError, match="calibration is for 5 candidates, query 'q' has 4"):
        stella.rerank(_cset(4), np.array([np.arange(4)]))


def test_stella_refuses_an_artifact_built_for_something_else(data, tmp_path):
    presets = tmp_path / "presets"
    _fake_presets(presets)
    artifact = presets / "stella.json"
    _calibrate(data, presets, artifact, "--depth", "5")
    # built for 5 candidates, used on 6
    stella = _preset(
        presets, "stella", "adapter: stella\nparams: {inner: primacy.yaml, artifact: stella.json}\n"
    )
    config = RunConfig(
        reranker=str(stella), dataset=str(data), queries=2, perms=2, out=str(tmp_path / "run")
    ).validate()
    with pytest.raises(HarnessError, match=r"calibration is for 5 candidates, query .q0. has 6"):
        execute_run(prepare_run(config))
    # built for another inner reranker (its params differ)
    _preset(presets, "other", "adapter: identity\nparams: {}\n")
    wrong = _preset(
        presets, "wrong", "adapter: stella\nparams: {inner: other.yaml, artifact: stella.json}\n"
    )
    with pytest.raises(HarnessError, match=r"built for something else.*reranker"):
        build_reranker(load_preset(wrong), CONTEXT)
    # a file that is not a calibration, and a missing one: refused before any model loads
    (presets / "junk.json").write_text(json.dumps({"format": "other"}), "utf-8")
    junk = _preset(
        presets, "junk", "adapter: stella\nparams: {inner: primacy.yaml, artifact: junk.json}\n"
    )
    with pytest.raises(HarnessError, match="not a STELLA calibration file"):
        check_preset(load_preset(junk))
    missing = _preset(
        presets, "missing", "adapter: stella\nparams: {inner: primacy.yaml, artifact: no.json}\n"
    )
    with pytest.raises(HarnessError, match="not found; make it with `harness stella-calibrate`"):
        check_preset(load_preset(missing))


def test_sgs_selects_greedily_and_costs_one_call_per_step(tmp_path):
    _fake_presets(tmp_path)
    path = _preset(tmp_path, "sgs", "adapter: sgs\nparams: {inner: primacy.yaml}\n")
    reranker = build_reranker(load_preset(path), CONTEXT)
    assert isinstance(reranker, StochasticGreedySelection)
    cset = _cset(6)
    shown = np.array([[3, 0, 1, 2, 4, 5], [5, 4, 3, 2, 1, 0]])
    outputs = reranker.rerank(cset, shown)
    steps = reranker.step_permutations(cset)
    assert [len(p) for p in steps] == [5, 4, 3, 2]
    for row, output in zip(shown, outputs, strict=True):
        # PrimacyReranker picks the item shown first: the shown order's head, then the head of
        # each content-seeded reshuffle of the remainder
        remaining, expected = [int(i) for i in row], []
        for step in range(6):
            expected.append(remaining.pop(0))
            if len(remaining) > 1:
                remaining = [remaining[k] for k in steps[step]]
        assert output.ranking == tuple(f"d{i}" for i in expected)
        assert output.facts.forward_passes == 5  # the last candidate needs no call
    oracle_path = _preset(
        tmp_path, "oracle", "adapter: 'tests.test_stella_sgs:OracleReranker'\nparams: {}\n"
    )
    _preset(tmp_path, "sgs2", "adapter: sgs\nparams: {inner: oracle.yaml, selection_size: 2}\n")
    assert oracle_path.is_file()
    sgs2 = build_reranker(load_preset(tmp_path / "sgs2.yaml"), CONTEXT)
    output = sgs2.rerank(cset, shown[:1])[0]
    assert output.ranking == cset.doc_ids and output.facts.forward_passes == 3
