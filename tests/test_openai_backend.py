"""The OpenAI-compatible HTTP backend: pure request/response functions, then the backend and
the runner against a FAKE fault-injecting server (tests/fake_openai_server.py). The real
llama.cpp server is exercised in tests/test_openai_llama_server.py."""

from __future__ import annotations

import functools
import json
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fake_openai_server import FAKE_MODEL, OTHER_MODEL, FakeServer, default_answer

from harness.backends.base import GenerationRequest, TokenBatch
from harness.backends.openai_backend import (
    OpenAIBackend,
    accepted_model,
    cache_key,
    chat_body,
    chat_logprob_body,
    generation_body,
    http_error_line,
    logprob_body,
    logprobs_problem,
    model_problem,
    parse_retry_after,
    read_next_token,
    read_text,
    reply_limit,
    retry_delay,
    served_identity,
    text_problem,
)
from harness.backends.params import ModelParams, OpenAIParams
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.rerankers.base import RunContext
from harness.rerankers.registry import check_preset, load_preset
from harness.results.store import SAMPLES_FILE
from harness.runner import dry_run, execute_run, prepare_run

# --- pure functions --------------------------------------------------------------------------


def test_logprob_body_asks_for_one_greedy_token_and_biases_the_answers():
    body = logprob_body("m", "prompt", [5, 7], top_logprobs=20, bias=100.0)
    assert body == {
        "model": "m",
        "prompt": "prompt",
        "max_tokens": 1,
        "temperature": 0.0,
        "logprobs": 20,
        "logit_bias": {"5": 100.0, "7": 100.0},
    }
    assert "logit_bias" not in logprob_body("m", "p", [5], top_logprobs=5, bias=None)


def test_generation_body_is_greedy_explicitly_and_seeds_only_sampling():
    greedy = GenerationRequest(max_new_tokens=30, stop_ids=frozenset({2}))
    body = generation_body("m", "p", greedy, ["<|im_end|>"])
    assert body["temperature"] == 0.0 and body["max_tokens"] == 30
    assert body["stop"] == ["<|im_end|>"] and "seed" not in body
    sampled = GenerationRequest(30, frozenset(), temperature=0.7, seed=2**40 + 3)
    assert generation_body("m", "p", sampled, [])["seed"] == (2**40 + 3) % 2**31
    ignoring = GenerationRequest(30, frozenset({2}), ignore_stop=True)
    assert "stop" not in generation_body("m", "p", ignoring, ["<|im_end|>"])


def test_read_next_token_marks_answers_the_server_did_not_return():
    response = {
        "choices": [
            {"text": "B", "logprobs": {"tokens": ["B"], "top_logprobs": [{"B": -0.5, "x": -0.1}]}}
        ]
    }
    read = read_next_token(response, ["A", "B"])
    assert read.logprobs == (-np.inf, -0.5)
    assert read.top_token == "x" and read.generated_tokens == 1


def test_read_next_token_counts_generated_tokens_from_usage_without_token_list():
    response = {"choices": [{"text": "AB", "logprobs": None}], "usage": {"completion_tokens": 2}}
    assert read_next_token(response, ["A"]).generated_tokens == 2


def test_read_text_reads_completions_and_chat_answers():
    assert read_text({"choices": [{"text": "[2] > [1]", "finish_reason": "stop"}]}) == (
        "[2] > [1]",
        True,
    )
    chat = {"choices": [{"message": {"content": "[1]"}, "finish_reason": "length"}]}
    assert read_text(chat) == ("[1]", False)
    with pytest.raises(HarnessError, match="without 'choices'"):
        read_text({"error": "x"}, "http://h/v1/completions")


def _choice(**fields) -> dict:
    return {"choices": [{"text": "A", **fields}]}


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ({"choices": []}, "no 'choices'"),
        (_choice(logprobs=None), "no top_logprobs"),
        (_choice(logprobs={"top_logprobs": []}), "no top_logprobs"),
        (_choice(logprobs={"top_logprobs": [{}]}), "empty"),
        (_choice(logprobs={"top_logprobs": [None]}), "not a mapping"),
        (_choice(logprobs={"top_logprobs": [{"A": "-0.1"}]}), "not a number"),
        (_choice(logprobs={"top_logprobs": [{"A": True}]}), "not a number"),
        (_choice(logprobs={"top_logprobs": [{"A": float("nan")}]}), "not a finite number"),
        (_choice(logprobs={"top_logprobs": [{"A": -float("inf")}]}), "not a finite number"),
    ],
)
def test_an_answer_without_usable_logprobs_says_what_is_wrong(response, expected):
    problem = logprobs_problem(response)
    assert problem is not None and expected in problem and "\n" not in problem
    assert logprobs_problem(_choice(logprobs={"top_logprobs": [{"A": -0.1, "B": -2}]})) is None


def test_a_generation_answer_needs_text():
    assert text_problem(_choice()) is None and text_problem(_choice(text="")) is None
    assert "not a string" in (text_problem(_choice(text=None)) or "")
    assert "no 'choices'" in (text_problem({"error": "x"}) or "")


def test_retry_after_seconds_and_http_dates():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


def test_retry_delay_honours_retry_after_and_backs_off_with_jitter():
    rng = random.Random(0)
    assert retry_delay(0, 2.5, base=0.5, cap=30, rng=rng) == 2.5
    assert retry_delay(0, 100.0, base=0.5, cap=30, rng=rng) == 30
    delays = [retry_delay(a, None, base=1.0, cap=8, rng=rng) for a in range(6)]
    for attempt, delay in enumerate(delays):
        ceiling = min(2.0**attempt, 8)
        assert ceiling / 2 <= delay <= ceiling


def test_reply_limit_grows_with_the_answer_asked_for():
    first = logprob_body("m", "p", [5], top_logprobs=50, bias=100.0)
    assert reply_limit(first) == 64 * 1024 + 1024 * 51
    rankgpt = generation_body("m", "p", GenerationRequest(200, frozenset()), [])
    assert reply_limit(rankgpt) == 64 * 1024 + 1024 * 200
    assert reply_limit({}) == 64 * 1024 + 1024


def test_cache_key_covers_endpoint_model_served_model_and_every_body_field():
    body = {"prompt": "p", "max_tokens": 1}
    url, served = "http://a/v1/completions", {"id": "m"}
    key = cache_key(url, "m", served, body)
    assert key == cache_key(url, "m", {"id": "m"}, {"max_tokens": 1, "prompt": "p"})
    assert key != cache_key("http://b/v1/completions", "m", served, body)
    assert key != cache_key(url, "n", served, body)
    assert key != cache_key(url, "m", {"id": "m", "root": "/weights/other"}, body)
    assert key != cache_key(url, "m", {"id": "alias"}, body)
    assert key != cache_key(url, "m", served, {**body, "max_tokens": 2})


def test_served_identity_keeps_what_names_the_weights_not_what_changes_per_listing():
    vllm = {"id": "m", "object": "model", "created": 1733, "owned_by": "vllm", "root": "/w/q"}
    listing = [{"id": "other"}, {**vllm, "permission": [{"id": "modelperm-1", "created": 5}]}]
    assert served_identity(listing, "m") == {"id": "m", "root": "/w/q"}
    assert served_identity([{"id": "m", "owned_by": "me"}], "m") == {"id": "m"}


def test_http_errors_are_one_line_and_name_the_cause():
    overflow = '{"error": {"message": "maximum context length is 8192 tokens"}}'
    line = http_error_line(400, "http://h/v1/completions", overflow, None)
    assert "context" in line and "window_size" in line and "\n" not in line
    assert "$MY_KEY" in http_error_line(401, "u", '{"error": "bad key"}', "MY_KEY")
    assert "base_url" in http_error_line(404, "u", "Not Found", None)


def test_params_refuse_bad_settings():
    with pytest.raises(HarnessError, match="http"):
        OpenAIParams(base_url="localhost:8000")
    with pytest.raises(HarnessError, match="variable name") as error:
        OpenAIParams(api_key_env="sk-secret-123")
    assert "secret" not in str(error.value)
    with pytest.raises(HarnessError, match="concurrency"):
        OpenAIParams(concurrency=0)
    with pytest.raises(HarnessError, match="endpoint"):
        OpenAIParams(endpoint="embeddings")
    with pytest.raises(HarnessError, match="invalid_retries"):
        OpenAIParams(invalid_retries=-1)


# --- presets and capabilities ----------------------------------------------------------------


def _preset(tmp_path: Path, adapter: str, **params) -> Path:
    path = tmp_path / f"{adapter}-http.yaml"
    body = {"model": FAKE_MODEL, "tokenizer": "tiny-random-llama", **params}
    lines = [f"name: {adapter}-http", f"adapter: {adapter}", "backend: openai", "params:"]
    lines += [f"  {key}: {json.dumps(value)}" for key, value in body.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("adapter", ["invarirank", "lft"])
def test_mask_methods_are_refused_in_one_line(tmp_path, adapter):
    with pytest.raises(HarnessError) as error:
        check_preset(load_preset(_preset(tmp_path, adapter)))
    message = str(error.value)
    assert "masked_forward" in message and "'openai'" in message and "\n" not in message


def test_bundled_http_presets_check_without_a_server():
    from harness.rerankers.registry import resolve_preset

    for name in (
        "first-openai",
        "rankgpt-openai",
        "pointwise-openai",
        "first-openai-chat",
        "rankgpt-openai-chat",
        "pointwise-openai-chat",
    ):
        check_preset(resolve_preset(name))


def test_refused_preset_leaves_no_run_folder(tmp_path, rankgpt_folder):
    config = RunConfig(
        reranker=str(_preset(tmp_path, "lft")),
        dataset=str(rankgpt_folder),
        perms=2,
        out=str(tmp_path / "run"),
    ).validate()
    with pytest.raises(HarnessError):
        prepare_run(config)
    assert not (tmp_path / "run").exists()


# --- the backend against the fake server -----------------------------------------------------


def _backend(base_url: str, tmp_path: Path, model: str = FAKE_MODEL, **engine) -> OpenAIBackend:
    from harness.models.loading import tiny_tokenizer

    settings = {"retry_backoff": 0.0, "cache_dir": str(tmp_path / "cache"), **engine}
    return OpenAIBackend(
        ModelParams(model=model),
        OpenAIParams(base_url=base_url, **settings),
        RunContext(),
        tokenizer=tiny_tokenizer(),
        tokenizer_name="tiny-random-llama",
    )


def _generate(backend: OpenAIBackend, prompt: str = "hello") -> str:
    ids = backend.tokenizer.encode(prompt)
    generation = backend.generate(TokenBatch.of([ids]), GenerationRequest(8, frozenset()))
    return generation.texts[0]


def _logprobs(backend: OpenAIBackend, answers: str = "ABC") -> list[float]:
    """The next-token log-probs of ``answers`` (one token each) after a short prompt."""
    ids = backend.tokenizer.encode(answers, add_special_tokens=False)
    batch = TokenBatch.of([backend.tokenizer.encode("hello")])
    return backend.next_token_logprobs(batch, ids).logprobs[0].tolist()


def _cached_files(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "cache").rglob("*.json"))


def test_an_answer_without_logprobs_is_asked_again(tmp_path):
    with FakeServer(faults=["no-logprobs"], answer=_identifier_answer) as server:
        backend = _backend(server.base_url, tmp_path)
        logprobs = _logprobs(backend)
        backend.close()
    assert all(np.isfinite(logprobs)) and len(server.bodies) == 2
    assert backend.usage()["retries"] == 1 and backend.usage()["requests_sent"] == 1


def _next_token(backend: OpenAIBackend, answers: str = "ABC"):
    ids = backend.tokenizer.encode(answers, add_special_tokens=False)
    batch = TokenBatch.of([backend.tokenizer.encode("hello")])
    return backend.next_token_logprobs(batch, ids)


def test_answers_that_stay_invalid_are_recorded_as_invalid_and_not_cached(tmp_path):
    with FakeServer(faults=["no-logprobs"] * 2, answer=_identifier_answer) as server:
        backend = _backend(server.base_url, tmp_path, invalid_retries=1)
        read = _next_token(backend)
        backend.close()
    (call,) = read.calls
    message = call["invalid"]
    assert message.startswith(f"invalid answer from {server.base_url}/completions: no top_logp")
    assert "still invalid after 2 answers" in message and "\n" not in message
    assert read.logprobs[0].tolist() == [-np.inf] * 3  # nothing read: the method's fallback
    assert len(server.bodies) == 2 and _cached_files(tmp_path) == []
    assert backend.usage()["requests_invalid"] == 1


def test_a_generation_without_text_is_recorded_as_invalid_not_read_as_text(tmp_path):
    with FakeServer(faults=["no-text"] * 3) as server:
        backend = _backend(server.base_url, tmp_path)
        ids = backend.tokenizer.encode("hello")
        generation = backend.generate(TokenBatch.of([ids]), GenerationRequest(8, frozenset()))
        backend.close()
    assert generation.texts == ("",)
    assert "choices[0].text is None, not a string" in generation.calls[0]["invalid"]
    assert len(server.bodies) == 3 and _cached_files(tmp_path) == []


def test_429_then_200_is_retried(tmp_path):
    with FakeServer(faults=["429", "500"]) as server:
        backend = _backend(server.base_url, tmp_path)
        assert _generate(backend) == "[1] > [2]"
        backend.close()
    assert len(server.bodies) == 3
    assert backend.usage()["retries"] == 2 and backend.usage()["requests_sent"] == 1


def test_retry_after_is_what_the_backend_waits(tmp_path):
    waited: list[float] = []
    with FakeServer(faults=["429"], retry_after="7") as server:
        backend = _backend(server.base_url, tmp_path)
        backend._sleep = waited.append
        _generate(backend)
        backend.close()
    assert waited == [7.0]


def test_persistent_5xx_gives_up_in_one_line(tmp_path):
    with FakeServer(faults=["500"] * 3) as server:
        backend = _backend(server.base_url, tmp_path, max_retries=2)
        with pytest.raises(HarnessError, match=r"HTTP 500 .*gave up after 3 attempts"):
            _generate(backend)
        backend.close()


def test_slow_answer_times_out_then_the_retry_succeeds(tmp_path):
    with FakeServer(faults=["slow"], slow_seconds=5.0) as server:
        backend = _backend(server.base_url, tmp_path, timeout=0.3, max_retries=1)
        assert _generate(backend) == "[1] > [2]"
        assert backend.usage()["retries"] == 1
        backend.close()


def test_timeout_without_retries_is_one_line(tmp_path):
    with FakeServer(faults=["slow"], slow_seconds=5.0) as server:
        backend = _backend(server.base_url, tmp_path, timeout=0.3, max_retries=0)
        with pytest.raises(HarnessError, match=r"no answer from .* within 0.3 s"):
            _generate(backend)
        backend.close()


def test_a_huge_reply_is_refused_in_one_line_not_retried_and_not_cached(tmp_path):
    """A runaway server (one 50 MB RankGPT answer once took 233 s and 14.6 GB): reading
    stops at the reply's byte limit."""
    with FakeServer(faults=["huge"]) as server:
        backend = _backend(server.base_url, tmp_path)
        with pytest.raises(HarnessError) as error:
            _generate(backend)
        backend.close()
    limit = 64 * 1024 + 1024 * 8
    assert str(error.value) == (
        f"reply from {server.base_url}/completions exceeded {limit} bytes for max_tokens=8; "
        "not cached"
    )
    assert len(server.bodies) == 1 and _cached_files(tmp_path) == []


def test_a_trickled_reply_cannot_outlive_the_timeout(tmp_path):
    """Each piece arrives well within the read timeout (which httpx applies per chunk); the
    request's own deadline ends it."""
    with FakeServer(faults=["trickle"], slow_seconds=8.0) as server:
        backend = _backend(server.base_url, tmp_path, timeout=1.0, max_retries=0)
        started = time.monotonic()
        with pytest.raises(HarnessError, match=r"no complete answer from .* within 1 s"):
            _generate(backend)
        assert time.monotonic() - started < 4.0
        backend.close()
    assert _cached_files(tmp_path) == []


def test_dropped_connection_is_retried_and_reported(tmp_path):
    with FakeServer(faults=["drop"]) as server:
        backend = _backend(server.base_url, tmp_path)
        assert _generate(backend) == "[1] > [2]"
        backend.close()
    with FakeServer(faults=["drop"] * 2) as server:
        backend = _backend(server.base_url, tmp_path / "other", max_retries=1)
        with pytest.raises(HarnessError, match="dropped the connection"):
            _generate(backend)
        backend.close()


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("malformed", "malformed JSON"),
        ("400", "HTTP 400 .*context"),
        ("401", r"HTTP 401 .*\$FAKE_KEY_VAR"),
    ],
)
def test_errors_that_are_not_retried(tmp_path, monkeypatch, fault, expected):
    monkeypatch.setenv("FAKE_KEY_VAR", "sk-do-not-leak")
    with FakeServer(faults=[fault]) as server:
        backend = _backend(server.base_url, tmp_path, api_key_env="FAKE_KEY_VAR")
        with pytest.raises(HarnessError, match=expected) as error:
            _generate(backend)
        backend.close()
    assert len(server.bodies) == 1
    assert "sk-do-not-leak" not in str(error.value) and "\n" not in str(error.value)


def test_refused_connection_and_bad_endpoint_fail_at_open(tmp_path):
    from harness.backends.llama_server import free_port

    with pytest.raises(HarnessError, match=r"cannot connect to .*is the server running"):
        _backend(f"http://127.0.0.1:{free_port()}/v1", tmp_path)
    with FakeServer() as server, pytest.raises(HarnessError, match=r"HTTP 404 .*base_url"):
        _backend(server.base_url.removesuffix("/v1"), tmp_path)


def test_unset_key_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("UNSET_KEY_VAR", raising=False)
    with (
        FakeServer() as server,
        pytest.raises(HarnessError, match=r"\$UNSET_KEY_VAR, which is not set"),
    ):
        _backend(server.base_url, tmp_path, api_key_env="UNSET_KEY_VAR")


def test_cache_answers_a_repeated_request_and_keeps_no_key(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_KEY_VAR", "sk-do-not-leak")
    with FakeServer() as server:
        first = _backend(server.base_url, tmp_path, api_key_env="FAKE_KEY_VAR")
        _generate(first)
        first.close()
        again = _backend(server.base_url, tmp_path, api_key_env="FAKE_KEY_VAR")
        _generate(again)
        again.close()
    assert len(server.bodies) == 1
    assert again.usage()["requests_cached"] == 1 and again.usage()["requests_sent"] == 0
    files = list((tmp_path / "cache").rglob("*.json"))
    assert len(files) == 1 and "sk-do-not-leak" not in files[0].read_text()


def test_an_invalid_cached_answer_is_asked_again(tmp_path):
    with FakeServer() as server:
        first = _backend(server.base_url, tmp_path)
        _generate(first)
        first.close()
        [path] = _cached_files(tmp_path)
        record = json.loads(path.read_text())
        record["response"]["choices"][0]["text"] = None  # cached before answers were checked
        path.write_text(json.dumps(record))
        again = _backend(server.base_url, tmp_path)
        assert _generate(again) == "[1] > [2]"
        again.close()
    assert len(server.bodies) == 2 and again.usage()["requests_cached"] == 0
    assert json.loads(path.read_text())["response"]["choices"][0]["text"] == "[1] > [2]"


def test_another_model_behind_the_same_url_and_name_never_reuses_answers(tmp_path):
    """The cache key holds what GET /models says about the served model: a server restarted
    with other weights under the same name (vLLM lists them as root) is asked again, and so
    is another listed id accepted with served_model; the same model hits the cache even
    though its listing's created time changed."""
    sent = []
    with FakeServer() as server:
        for root, created, served_model in [
            ("/weights/a", 1, None),
            ("/weights/b", 2, None),
            ("/weights/a", 3, None),
            ("/weights/a", 4, "alias"),
        ]:
            server.models = [
                {"id": FAKE_MODEL, "root": root, "created": created},
                {"id": "alias", "root": root, "created": created},
            ]
            backend = _backend(server.base_url, tmp_path, served_model=served_model)
            assert _generate(backend) == "[1] > [2]"
            backend.close()
            sent.append(len(server.bodies))
    assert sent == [1, 2, 2, 3]


def test_identity_records_the_server_model_and_tokenizer(tmp_path):
    with FakeServer() as server:
        backend = _backend(server.base_url, tmp_path)
        identity = backend.identity()
        backend.close()
    assert identity["served_models"] == [FAKE_MODEL]
    assert identity["tokenizer"] == "tiny-random-llama" and identity["name"] == FAKE_MODEL
    assert "served_model" not in identity  # only where the preset accepts another id


def test_a_server_of_another_model_is_refused_before_anything_is_sent(tmp_path):
    with FakeServer(models=[OTHER_MODEL]) as server, pytest.raises(HarnessError) as error:
        _backend(server.base_url, tmp_path, model="smollm2-135m")
    assert str(error.value) == (
        f"{server.base_url}/models serves 'other-model', not 'smollm2-135m'; point base_url "
        "at a server of 'smollm2-135m', or accept the model it serves with served_model: <id>"
    )
    assert server.bodies == []


def _other_model_answer(body: dict) -> dict:
    return {**default_answer(body), "model": OTHER_MODEL}


def test_served_model_accepts_the_id_the_server_lists(tmp_path):
    with FakeServer(models=[OTHER_MODEL], answer=_other_model_answer) as server:
        backend = _backend(server.base_url, tmp_path, "smollm2-135m", served_model=OTHER_MODEL)
        assert _generate(backend) == "[1] > [2]"
        assert backend.identity()["served_model"] == OTHER_MODEL
        backend.close()
        with pytest.raises(HarnessError, match=r"not served_model 'gone'; set served_model"):
            _backend(server.base_url, tmp_path, "smollm2-135m", served_model="gone")


def test_an_answer_from_another_model_is_invalid(tmp_path):
    with FakeServer(faults=["wrong-model"] * 3) as server:
        backend = _backend(server.base_url, tmp_path)
        ids = backend.tokenizer.encode("hello")
        generation = backend.generate(TokenBatch.of([ids]), GenerationRequest(8, frozenset()))
        backend.close()
    problem = generation.calls[0]["invalid"]
    assert f"answered as model 'other-model', not '{FAKE_MODEL}'" in problem
    assert "still invalid after 3 answers" in problem and _cached_files(tmp_path) == []
    assert generation.texts == ("",)  # another model's text is not read


def test_accepted_names_are_exact():
    accepted = {"smollm2-135m", "alias"}
    assert model_problem({"model": "smollm2-135m"}, accepted) is None
    assert model_problem({"model": "alias"}, accepted) is None
    assert model_problem({}, accepted) is None  # a server that does not say is not refused
    assert "'SmolLM2-135M'" in (model_problem({"model": "SmolLM2-135M"}, accepted) or "")
    listed = [f"m{i}" for i in range(8)]
    assert accepted_model("m7", None, listed, "u") == "m7"
    assert accepted_model("x", "m0", listed, "u") == "m0"
    with pytest.raises(HarnessError, match=r"serves 'm0', .*'m4' and 3 more, not 'x'"):
        accepted_model("x", None, listed, "u")
    with pytest.raises(HarnessError, match="serves no model"):
        accepted_model("x", None, [], "u")


# --- methods and the runner against the fake server ------------------------------------------


@functools.cache
def _tiny_tokenizer():
    from harness.models.loading import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(autouse=True)
def _tokenizer_loaded_in_the_main_thread():
    """The fake answers in its own threads; importing transformers there while the main
    thread imports too can deadlock on the import lock, so load it here first."""
    _tiny_tokenizer()


def _identifier_answer(body: dict) -> dict:
    """A FIRST answer that prefers identifiers with the highest token id (the fake has no
    model; it only lists the biased tokens by the text the tiny tokenizer gives them)."""
    tokenizer = _tiny_tokenizer()
    answer = default_answer(body)
    ids = sorted((int(k) for k in body.get("logit_bias", {})), reverse=True)
    top = {tokenizer.decode([i]): -0.1 * rank for rank, i in enumerate(ids)}
    answer["choices"][0]["logprobs"] = {"tokens": [next(iter(top), "")], "top_logprobs": [top]}
    return answer


def _first_config(tmp_path, folder, base_url, out="run", **engine) -> RunConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    preset = _preset(
        tmp_path,
        "first",
        base_url=base_url,
        window_size=6,
        stride=3,
        retry_backoff=0.0,
        cache_dir=str(tmp_path / "cache"),
        **engine,
    )
    return RunConfig(
        reranker=str(preset), dataset=str(folder), perms=3, batch_size=2, out=str(tmp_path / out)
    ).validate()


def _samples(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / SAMPLES_FILE).read_text().splitlines()]


def test_first_over_http_records_calls_and_counts_requests(tmp_path, rankgpt_folder):
    with FakeServer(answer=_identifier_answer) as server:
        results = execute_run(prepare_run(_first_config(tmp_path, rankgpt_folder, server.base_url)))
    windows = 4 * 4 * 3  # 4 queries x 4 orders (3 random + reference) x 3 windows of 12
    assert len(server.bodies) == windows
    assert results.counts["requests"] == windows and results.counts["requests_cached"] == 0
    assert results.counts["server_prompt_tokens"] == 7 * windows
    sample = _samples(tmp_path / "run")[0]
    call = sample["facts"]["extra"]["window_details"][0]["http"]
    assert call["server_model"] == FAKE_MODEL and call["system_fingerprint"] == "fp-fake"
    assert call["logit_bias"] is True and sample["facts"]["generated_tokens"] == 3
    assert "HTTP requests" in (tmp_path / "run" / "summary.md").read_text()


def test_concurrency_does_not_change_results_or_their_order(tmp_path, rankgpt_folder):
    runs = {}
    with FakeServer(answer=_identifier_answer) as server:
        for concurrency in (1, 4):
            config = _first_config(
                tmp_path / f"c{concurrency}",
                rankgpt_folder,
                server.base_url,
                concurrency=concurrency,
            )
            execute_run(prepare_run(config))
            runs[concurrency] = [
                (s["query_id"], s["order_index"], s["ranking"]) for s in _samples(Path(config.out))
            ]
    assert runs[1] == runs[4]


def test_killed_run_resends_only_unanswered_requests(tmp_path, rankgpt_folder):
    """A run killed midway, rerun: the server receives exactly the requests it had not
    answered (orders already saved are skipped, and windows answered before the kill come
    from the cache), and every request is sent exactly once overall."""
    with FakeServer(answer=_identifier_answer) as server:
        config = _first_config(tmp_path, rankgpt_folder, server.base_url, concurrency=2)
        prepared = prepare_run(config)
        counted = dry_run(prepared)
        total = counted.usage["requests_would_send"]
        assert total == 48 and len(server.bodies) == 0  # a dry run sends nothing

        def stop_after_some(done, _total, queries=None):
            if done >= 6:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            execute_run(prepared, progress=stop_after_some)
        first = len(server.bodies)
        assert 0 < first < total
        assert 6 <= len(_samples(tmp_path / "run")) < 16
        left = dry_run(prepare_run(config))
        assert left.usage["requests_would_send"] == total - first
        execute_run(prepare_run(config))
    assert len(server.bodies) == total
    assert len({json.dumps(b, sort_keys=True) for b in server.bodies}) == total


def test_failed_request_keeps_every_finished_order(tmp_path, rankgpt_folder):
    faults = [None] * 20 + ["401"]

    with FakeServer(answer=_identifier_answer) as server:
        server.faults.extend(faults)
        # One request at a time: with several in flight, 20 answers can spread over more
        # orders than 6 and finish fewer of them, which is scheduling, not what is tested.
        config = _first_config(tmp_path, rankgpt_folder, server.base_url, concurrency=1)
        with pytest.raises(HarnessError, match="HTTP 401"):
            execute_run(prepare_run(config))
    kept = _samples(tmp_path / "run")
    assert len(kept) >= 6  # 20 answered requests: at least 6 orders of 3 windows finished
    assert all(len(s["facts"]["extra"]["window_details"]) == 3 for s in kept)


def _without_logprobs(body: dict) -> dict:
    answer = _identifier_answer(body)
    answer["choices"][0]["logprobs"] = {"tokens": ["A"], "top_logprobs": [{}]}
    return answer


def test_a_server_without_logprobs_fails_the_run_instead_of_ranking_by_doc_id(
    tmp_path, rankgpt_folder
):
    """Before issue 27 such a run exited 0, ranked every window by doc id and reported
    Kendall tau 1.0. Now it stops at the first batch that makes the invalid share certain to
    pass --max-invalid-share (2 invalid orders > 5% of 16), in one line."""
    with FakeServer(answer=_without_logprobs) as server:
        config = _first_config(tmp_path, rankgpt_folder, server.base_url, concurrency=1)
        with pytest.raises(HarnessError) as error:
            execute_run(prepare_run(config))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("2 of 16 orders got invalid answers, more than --max-invalid-share")
    assert "(first: query 'q0', order 0: invalid answer from " in message
    assert "top_logprobs of the first generated token is empty" in message
    kept = _samples(tmp_path / "run")  # the batch that decided it, kept and marked invalid
    assert len(kept) == 2 and all(s["facts"]["extra"]["invalid_answers"] == 3 for s in kept)
    assert _cached_files(tmp_path) == [] and len(server.bodies) == 2 * 3 * 3


def test_an_invalid_order_past_the_bound_stops_the_run_and_a_rerun_asks_it_again(
    tmp_path, rankgpt_folder
):
    """One invalid order of 16 is 6.25% > the default 5%: the run stops, keeps every finished
    order; a rerun against the fixed server asks only the invalid order's windows again."""
    with FakeServer(answer=_identifier_answer) as server:
        server.faults.extend([None] * 20 + ["no-logprobs"] * 3)
        config = _first_config(tmp_path, rankgpt_folder, server.base_url, concurrency=1)
        with pytest.raises(HarnessError, match=r"^1 of 16 orders got invalid answers"):
            execute_run(prepare_run(config))
        kept = _samples(tmp_path / "run")
        assert len(kept) == 8  # 4 batches of 2 orders: the 4th holds the invalid one
        assert [bool(s["facts"]["extra"].get("invalid_answers")) for s in kept].count(True) == 1
        sent = len(server.bodies)
        results = execute_run(prepare_run(config))
        resent = server.bodies[sent:]
    done = _samples(tmp_path / "run")
    assert len(done) == 17 and done[:8] == kept  # the invalid order's new sample wins
    assert results.summary_value("invalid_share") == 0.0 and "invalid_orders" not in results.counts
    assert len(resent) == 2 * 3 * 4 + 2  # 8 pending orders, and the invalid window and after
    for sample in done:
        if sample["facts"]["extra"].get("invalid_answers"):
            continue  # superseded: the order's new sample, appended, is the one read
        assert all("missing_identifier_logprobs" not in w for w in _windows(sample))


def test_invalid_orders_below_the_bound_are_reported_left_out_and_never_cached(
    tmp_path, rankgpt_folder
):
    with FakeServer(answer=_identifier_answer) as server:
        server.faults.extend([None] * 20 + ["no-logprobs"] * 3)
        config = _first_config(tmp_path, rankgpt_folder, server.base_url, concurrency=1)
        config = replace(config, max_invalid_share=0.1).validate()
        results = execute_run(prepare_run(config))
    assert results.summary_value("invalid_share") == 1 / 16  # exactly: 1 order of 16
    assert results.counts["invalid_orders"] == 1 and results.counts["samples"] == 16
    invalid = [s for s in _samples(tmp_path / "run") if s["facts"]["extra"].get("invalid_answers")]
    (sample,) = invalid
    query = sample["query_id"]
    assert results.per_query[query]["invalid_share"] == 0.25  # 1 of its 4 orders
    assert results.per_query[query]["n_orders"] == 2  # 3 design orders, 1 left out
    (bad,) = [w["http"] for w in _windows(sample) if "invalid" in w["http"]]
    assert "no top_logprobs" in bad["invalid"]
    # every answer cached is a valid one: the invalid request's 3 answers are not among them
    assert len(_cached_files(tmp_path)) == len(server.bodies) - 3
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "| invalid_share | 0.0625 |" in summary and "1 of 16 orders" in summary


def _windows(sample: dict) -> list[dict]:
    return sample["facts"]["extra"]["window_details"]


def test_dry_run_counts_cached_answers_of_the_served_model_only(tmp_path, rankgpt_folder):
    """A dry run asks GET /models as the run does, so it counts as cached exactly the
    answers the run would take from the cache."""
    with FakeServer(answer=_identifier_answer) as server:
        server.models = [{"id": FAKE_MODEL, "root": "/weights/a"}]
        execute_run(prepare_run(_first_config(tmp_path, rankgpt_folder, server.base_url)))
        config = _first_config(tmp_path, rankgpt_folder, server.base_url, out="again")
        counted = dry_run(prepare_run(config)).usage
        assert (counted["requests_cached"], counted["requests_would_send"]) == (48, 0)
        server.models = [{"id": FAKE_MODEL, "root": "/weights/b"}]
        counted = dry_run(prepare_run(config)).usage
        assert (counted["requests_cached"], counted["requests_would_send"]) == (0, 48)
        assert len(server.bodies) == 48  # the dry runs sent no completion


def test_dry_run_without_a_server_says_why_it_asks(tmp_path, rankgpt_folder):
    from harness.backends.llama_server import free_port

    config = _first_config(tmp_path, rankgpt_folder, f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(HarnessError, match=r"cannot connect to .*a dry run asks it which model"):
        dry_run(prepare_run(config))


def test_cli_dry_run_prints_requests_and_tokens_and_sends_nothing(tmp_path, rankgpt_folder):
    from typer.testing import CliRunner

    from harness.cli import app

    with FakeServer(answer=_identifier_answer) as server:
        config = _first_config(tmp_path, rankgpt_folder, server.base_url)
        args = ["run", "--reranker", config.reranker, "--dataset", str(rankgpt_folder)]
        args += ["--perms", "3", "--out", str(tmp_path / "run"), "--dry-run"]
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "would send 48 requests" in result.output and "prompt tokens" in result.output
    assert server.bodies == [] and not (tmp_path / "run").exists()


def _psc_over_http(tmp_path: Path, folder, base_url, out: str, **engine) -> RunConfig:
    """psc (3 shuffles) over FIRST on the fake server."""
    inner = _first_config(tmp_path, folder, base_url, out=out, **engine).reranker
    meta = tmp_path / "psc-http.yaml"
    meta.write_text(
        f"name: psc-http\nadapter: psc\nparams:\n  inner: {json.dumps(inner)}\n  shuffles: 3\n",
        encoding="utf-8",
    )
    return RunConfig(
        reranker=str(meta), dataset=str(folder), perms=3, batch_size=2, out=str(tmp_path / out)
    ).validate()


def test_debiaser_over_http_counts_its_requests_and_runs_them_concurrently(
    tmp_path, rankgpt_folder
):
    """A meta-reranker over a served model: the dry run counts what it would send, the
    results count every request the server received, and concurrency changes nothing."""
    runs = {}
    with FakeServer(answer=_identifier_answer) as server:
        for concurrency in (1, 4):
            config = _psc_over_http(
                tmp_path / f"c{concurrency}",
                rankgpt_folder,
                server.base_url,
                "run",
                concurrency=concurrency,
            )
            prepared = prepare_run(config)
            counted = dry_run(prepared)
            assert server.bodies == []
            windows = 4 * 4 * 3 * 3  # queries x orders x shuffles x windows
            assert counted.orders == 16 and counted.usage["requests_would_send"] == windows
            results = execute_run(prepared)
            assert len(server.bodies) == windows
            assert results.counts["requests"] == windows
            assert results.counts["server_prompt_tokens"] == 7 * windows
            server.bodies.clear()
            runs[concurrency] = [
                (s["query_id"], s["order_index"], s["ranking"]) for s in _samples(Path(config.out))
            ]
    assert runs[1] == runs[4]


def test_pointwise_over_http_marks_every_order_of_a_set_with_an_invalid_answer(
    tmp_path, rankgpt_folder
):
    """Pointwise scores a set once for all its orders: one candidate's answer that stays
    invalid makes each of the set's orders invalid (the candidate would rank by fallback)."""
    preset = _preset(
        tmp_path, "pointwise", base_url="", retry_backoff=0.0, cache_dir=str(tmp_path / "c")
    )
    with FakeServer(answer=_identifier_answer) as server:
        text = preset.read_text().replace('base_url: ""', f'base_url: "{server.base_url}"')
        preset.write_text(text + "  concurrency: 1\n", encoding="utf-8")
        server.faults.extend([None] * 12 + ["no-logprobs"] * 3)  # q0's 12 candidates, then q1's
        config = RunConfig(
            reranker=str(preset),
            dataset=str(rankgpt_folder),
            perms=3,
            out=str(tmp_path / "run"),
            max_invalid_share=0.5,
        ).validate()
        results = execute_run(prepare_run(config))
    assert results.per_query["q1"]["invalid_share"] == 1.0
    assert results.summary_value("invalid_share") == 4 / 16
    assert results.per_query["q0"]["invalid_share"] == 0.0
    assert all(
        s["facts"]["extra"]["invalid_answers"] == 1
        for s in _samples(tmp_path / "run")
        if s["query_id"] == "q1"
    )


# --- chat completions (endpoint: chat) --------------------------------------------------------


def _chat_answer(text: str = "B", top: dict | None = None) -> dict:
    """A chat answer in llama.cpp's shape (checked against the real server in
    test_openai_llama_server.py)."""
    alternatives = [{"token": t, "logprob": v, "bytes": None} for t, v in (top or {}).items()]
    content = [{"token": text, "logprob": -0.1, "bytes": None, "top_logprobs": alternatives}]
    return {
        "model": FAKE_MODEL,
        "choices": [
            {
                "message": {"role": "assistant", "content": text},
                "logprobs": {"content": content, "refusal": None},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1},
    }


def test_chat_bodies_send_the_turns_and_ask_for_the_first_tokens_alternatives():
    turns = (("system", "s"), ("user", "u"))
    body = chat_logprob_body("m", turns, [5, 7], top_logprobs=20, bias=100.0)
    assert body == {
        "model": "m",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
        "max_tokens": 1,
        "temperature": 0.0,
        "logprobs": True,
        "top_logprobs": 20,
        "logit_bias": {"5": 100.0, "7": 100.0},
    }
    assert reply_limit(body) == 64 * 1024 + 1024 * 21  # logprobs: true counts top_logprobs
    generation = chat_body("m", turns, GenerationRequest(30, frozenset({2})))
    assert generation["max_tokens"] == 30 and generation["temperature"] == 0.0
    assert "stop" not in generation  # the server ends the reply at its own end of turn
    assert reply_limit(generation) == 64 * 1024 + 1024 * 30


def test_chat_logprobs_are_read_from_the_first_tokens_top_logprobs():
    read = read_next_token(_chat_answer("B", {"B": -0.5, "x": -0.1}), ["A", "B"])
    assert read.logprobs == (-np.inf, -0.5)
    assert read.top_token == "x" and read.generated_tokens == 1
    assert logprobs_problem(_chat_answer("B", {"B": -0.5})) is None
    assert text_problem(_chat_answer("[1] > [2]")) is None


def _chat_without(**change) -> dict:
    answer = _chat_answer("B", {"B": -0.5})
    choice = answer["choices"][0]
    for key, value in change.items():
        if key == "content":
            choice["message"]["content"] = value
        elif key == "top":
            choice["logprobs"]["content"][0]["top_logprobs"] = value
        else:
            choice[key] = value
    return answer


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (_chat_without(logprobs=None), "no top_logprobs in choices[0].logprobs.content[0]"),
        (_chat_without(logprobs={"content": []}), "no top_logprobs in choices[0].logprobs.con"),
        (_chat_without(top=[]), "no top_logprobs"),
        (_chat_without(top=[{"logprob": -1.0}]), "an entry without a token"),
        (_chat_without(top=[{"token": "B", "logprob": None}]), "not a number"),
        (_chat_without(top=[{"token": "B", "logprob": float("nan")}]), "not a finite number"),
    ],
)
def test_a_chat_answer_without_usable_logprobs_says_what_is_wrong(response, expected):
    problem = logprobs_problem(response)
    assert problem is not None and expected in problem and "\n" not in problem


def test_a_chat_generation_needs_content():
    problem = text_problem(_chat_without(content=None))
    assert problem == "choices[0].message.content is None, not a string"


def _chat_backend(base_url: str, tmp_path: Path, **engine) -> OpenAIBackend:
    return _backend(base_url, tmp_path, endpoint="chat", **engine)


def _chat_batch(backend: OpenAIBackend) -> TokenBatch:
    turns = (("system", "s"), ("user", "hello"))
    return TokenBatch.of([backend.tokenizer.encode("hello")], chats=[turns])


def test_chat_logprobs_go_to_chat_completions_and_invalid_ones_are_asked_again(tmp_path):
    """Missing top_logprobs: asked again, then recorded as invalid in one line; never cached."""
    ids = _tiny_tokenizer().encode("ABC", add_special_tokens=False)
    with FakeServer(faults=["no-logprobs"], answer=_identifier_answer) as server:
        backend = _chat_backend(server.base_url, tmp_path)
        read = backend.next_token_logprobs(_chat_batch(backend), ids)
        backend.close()
    assert np.isfinite(read.logprobs).all() and read.generated_tokens == (1,)
    assert len(server.bodies) == 2 and server.bodies[0]["messages"][-1]["role"] == "user"
    assert backend.usage()["retries"] == 1 and len(_cached_files(tmp_path)) == 1
    with FakeServer(faults=["no-logprobs"] * 3, answer=_identifier_answer) as server:
        backend = _chat_backend(server.base_url, tmp_path / "again")
        read = backend.next_token_logprobs(_chat_batch(backend), ids)
        backend.close()
    [call] = read.calls
    message = call["invalid"]
    assert message.startswith(
        f"invalid answer from {server.base_url}/chat/completions: no top_logprobs in "
        "choices[0].logprobs.content[0]"
    )
    assert "still invalid after 3 answers" in message and "\n" not in message
    assert np.isneginf(read.logprobs).all() and backend.usage()["requests_invalid"] == 1
    assert len(server.bodies) == 3 and _cached_files(tmp_path / "again") == []


def test_a_huge_chat_reply_is_refused_and_not_cached(tmp_path):
    with FakeServer(faults=["huge"]) as server:
        backend = _chat_backend(server.base_url, tmp_path)
        with pytest.raises(HarnessError) as error:
            backend.generate(_chat_batch(backend), GenerationRequest(8, frozenset()))
        backend.close()
    assert str(error.value) == (
        f"reply from {server.base_url}/chat/completions exceeded {64 * 1024 + 1024 * 8} bytes "
        "for max_tokens=8; not cached"
    )
    assert len(server.bodies) == 1 and _cached_files(tmp_path) == []


def test_chat_refuses_what_it_cannot_send(tmp_path):
    with FakeServer() as server:
        backend = _chat_backend(server.base_url, tmp_path)
        bare = TokenBatch.of([backend.tokenizer.encode("hello")])  # a method without turns
        with pytest.raises(HarnessError, match=r"needs the prompt as chat messages"):
            backend.generate(bare, GenerationRequest(8, frozenset()))
        ignoring = GenerationRequest(8, frozenset({2}), ignore_stop=True)
        with pytest.raises(HarnessError, match="ignore_eos needs endpoint: completions"):
            backend.generate(_chat_batch(backend), ignoring)
        backend.close()
    assert server.bodies == []


def _small_run(tmp_path: Path, adapter: str, base_url: str, out: str, **params) -> RunConfig:
    """One query of 12 candidates, 2 orders (1 random + the reference), windows of 6."""
    window = {"window_size": 6, "stride": 3} if adapter != "pointwise" else {}
    preset = _preset(
        tmp_path, adapter, base_url=base_url, retry_backoff=0.0,
        cache_dir=str(tmp_path / "cache"), **window, **params,
    )  # fmt: skip
    return RunConfig(
        reranker=str(preset), dataset=str(tmp_path / "data"), perms=1, queries=1,
        out=str(tmp_path / out),
    ).validate()  # fmt: skip


def test_first_over_chat_sends_the_conversation_unprimed_and_caches_per_endpoint(
    tmp_path, rankgpt_folder
):
    """FIRST on endpoint: chat: each window is the same conversation as messages, without the
    primed '[' (a chat request cannot open the reply), its identifiers read from the first
    token's top_logprobs; the prompt identity says so, and the cache keeps chat and
    completions answers apart."""
    with FakeServer(answer=_identifier_answer) as server:
        config = _small_run(tmp_path, "first", server.base_url, "run", endpoint="chat")
        assert dry_run(prepare_run(config)).usage["requests_would_send"] == 6
        assert server.bodies == []
        results = execute_run(prepare_run(config))
        assert len(server.bodies) == 6
        body = server.bodies[0]
        assert "prompt" not in body and body["logprobs"] is True and body["max_tokens"] == 1
        assert [m["role"] for m in body["messages"]] == ["system", "user"]
        assert not body["messages"][-1]["content"].endswith("[")
        again = _small_run(tmp_path, "first", server.base_url, "again", endpoint="chat")
        assert dry_run(prepare_run(again)).usage["requests_cached"] == 6
        completions = _small_run(tmp_path, "first", server.base_url, "plain")
        assert dry_run(prepare_run(completions)).usage["requests_would_send"] == 6
        plain = execute_run(prepare_run(completions))
    identity = results.reranker.identity
    assert identity["prime"] == "" and identity["model"]["endpoint"] == "chat"
    assert "chat messages" in identity["prompt_format"]
    assert "prompt_format" not in plain.reranker.identity
    assert identity["prompt_sha256"].keys() == plain.reranker.identity["prompt_sha256"].keys()
    assert set(identity["prompt_sha256"].values()).isdisjoint(
        plain.reranker.identity["prompt_sha256"].values()
    )
    assert results.counts["requests"] == 6 and results.counts["server_prompt_tokens"] == 7 * 6
    sample = _samples(tmp_path / "run")[0]
    assert len(sample["ranking"]) == 12 and sample["facts"]["generated_tokens"] == 3
    assert all(not w.get("missing_identifier_logprobs") for w in _windows(sample))


def test_rankgpt_over_chat_sends_its_conversation_and_parses_the_reply(tmp_path, rankgpt_folder):
    with FakeServer(faults=["no-text"]) as server:
        config = _small_run(
            tmp_path, "rankgpt", server.base_url, "run", endpoint="chat", concurrency=1
        )
        results = execute_run(prepare_run(config))
    assert len(server.bodies) == 2 * 3 + 1  # 2 orders x 3 windows, one answer asked again
    body = server.bodies[0]
    assert body["messages"][0]["role"] == "system" and "stop" not in body
    assert body["max_tokens"] > 1 and body["temperature"] == 0.0
    for sample in _samples(tmp_path / "run"):
        for window in _windows(sample):
            assert window["output"] == "[1] > [2]" and window["http"]["cached"] is False
    assert "chat messages" in results.reranker.identity["prompt_format"]
    assert len(_cached_files(tmp_path)) == 6


def test_pointwise_over_chat_reads_yes_and_no_at_the_start_of_the_reply(tmp_path, rankgpt_folder):
    """The template's " yes"/" no" follow its prompt on completions; a chat reply starts with
    the word itself, so the answer tokens are "yes"/"no" (SmolLM2's tokenizer: one token
    each). A candidate whose answers keep coming without log-probs is refused; nothing
    invalid is cached, and once the server is fixed the run completes."""
    from harness.backends.openai_backend import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    yes, no = (tokenizer.encode(w, add_special_tokens=False) for w in ("yes", "no"))
    broken = {"doc 7 of query 0"}

    def yes_no(body: dict) -> dict:
        answer = default_answer(body)
        assert set(body["logit_bias"]) == {str(yes[0]), str(no[0])}
        prompt = body["messages"][-1]["content"]
        value = -0.1 if "1" in prompt else -3.0  # a deterministic, prompt-dependent score
        top = [{"yes": value, "no": -1.0, "The": -0.5}]
        logprobs = (
            None if any(b in prompt for b in broken) else {"tokens": ["yes"], "top_logprobs": top}
        )
        answer["choices"][0]["logprobs"] = logprobs
        return answer

    settings = {"endpoint": "chat", "tokenizer": "smollm2-135m", "invalid_retries": 1}
    with FakeServer(answer=yes_no) as server:
        refused = _small_run(tmp_path, "pointwise", server.base_url, "refused", **settings)
        with pytest.raises(HarnessError, match=r"chat/completions: no top_logprobs .*after 2"):
            execute_run(prepare_run(refused))
        cached = [json.loads(path.read_text()) for path in _cached_files(tmp_path)]
        assert all(logprobs_problem(c["response"]) is None for c in cached)
        assert not any("doc 7 " in c["body"]["messages"][0]["content"] for c in cached)
        broken.clear()  # the server is fixed
        sent = len(server.bodies)
        config = _small_run(tmp_path, "pointwise", server.base_url, "run", **settings)
        results = execute_run(prepare_run(config))
    assert len(server.bodies) - sent == 12 - len(cached) and len(_cached_files(tmp_path)) == 12
    assert [m["role"] for m in server.bodies[0]["messages"]] == ["user"]
    assert server.bodies[0]["messages"][0]["content"].endswith("Answer:")
    identity = results.reranker.identity
    assert "first token of the reply" in identity["score"]
    samples = _samples(tmp_path / "run")
    assert len(samples) == 2 and samples[0]["ranking"] == samples[1]["ranking"]
    assert samples[0]["facts"]["extra"]["http"]["requests"] == 12


def test_a_chat_answer_from_another_model_is_invalid_and_not_cached(tmp_path):
    with FakeServer(faults=["wrong-model"] * 3) as server:
        backend = _chat_backend(server.base_url, tmp_path)
        generation = backend.generate(_chat_batch(backend), GenerationRequest(8, frozenset()))
        backend.close()
    problem = generation.calls[0]["invalid"]
    assert problem.startswith(f"invalid answer from {server.base_url}/chat/completions")
    assert f"answered as model 'other-model', not '{FAKE_MODEL}'" in problem
    assert generation.texts == ("",)  # another model's text is not read
    assert len(server.bodies) == 3 and _cached_files(tmp_path) == []


def test_the_usage_an_output_carries_is_what_its_stored_facts_read_back(tmp_path):
    """The typed requests a method counts (``CallFacts.http``: per window for FIRST, plus the
    content-free pass for CapCal, per set for pointwise, summed by a debiaser) are what the
    run summary reads back from the stored facts (``stored_usage``), one cached answer too."""
    from harness.data.model import Candidate, CandidateSet, TextQuery
    from harness.rerankers.debiasers.meta import InnerTally
    from harness.rerankers.registry import build_reranker, resolve_preset
    from harness.usage import HttpUsage, Usage, stored_usage, total

    texts = [f"passage {i} on topic {i % 3}" for i in range(8)]
    cset = CandidateSet(
        "q1", TextQuery("topic 2"), tuple(Candidate(f"d{i}", t, 0.0) for i, t in enumerate(texts))
    )
    orders = np.array([np.arange(8), np.arange(8)[::-1]])
    engine = {"retry_backoff": 0.0, "cache_dir": str(tmp_path / "cache")}
    with FakeServer(answer=_identifier_answer) as server:
        for adapter, params in [
            ("first", {"window_size": 6, "stride": 2}),
            ("first-capcal", {"window_size": 6, "stride": 2}),
            ("pointwise", {}),
        ]:
            preset = _preset(tmp_path, adapter, base_url=server.base_url, **engine, **params)
            reranker = build_reranker(resolve_preset(str(preset)), RunContext())
            sent = len(server.bodies)
            outputs = reranker.rerank(cset, orders)
            outputs += reranker.rerank(cset, orders[:1])  # cached (FIRST) or reused (pointwise)
            reranker.close()
            facts = [o.facts for o in outputs]
            assert [stored_usage(f.to_dict()) for f in facts] == [f.usage for f in facts]
            run = total((f.http for f in facts), HttpUsage())
            assert run.requests - run.cached == len(server.bodies) - sent > 0, adapter
            tally = InnerTally()
            for f in facts:
                tally.add(f)
            summed = tally.facts(1.0, 1, {})
            assert summed.usage == total((f.usage for f in facts), Usage())
            assert stored_usage(summed.to_dict()) == summed.usage
    assert outputs[0].facts.http.requests == 8 and outputs[-1].facts.http == HttpUsage()
