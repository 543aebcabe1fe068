"""The vLLM backend's request building and result parsing, without vLLM installed.

vLLM's outputs are stood in for by ``SimpleNamespace`` objects shaped like its
``RequestOutput`` / ``CompletionOutput`` / ``Logprob`` (fakes, not vLLM); the backend itself
must refuse to open where vLLM or a GPU is missing, and the vLLM presets must build the same
method classes as the transformers ones, with their settings checked before vLLM is needed.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from harness.backends import vllm_backend
from harness.backends.base import GenerationRequest
from harness.backends.vllm_backend import (
    engine_kwargs,
    generation_sampling,
    logprob_sampling,
    read_generation,
    read_next_token,
    require_vllm,
    resolve_vllm_model,
    supports_field,
    token_prompts,
)
from harness.errors import HarnessError, MissingExtraError
from harness.rerankers.base import RunContext
from harness.rerankers.registry import build_reranker, load_preset, resolve_preset


def fake_output(token_ids, text="", finish_reason="stop", logprobs=None):
    completion = SimpleNamespace(
        text=text, token_ids=token_ids, finish_reason=finish_reason, logprobs=logprobs
    )
    return SimpleNamespace(outputs=[completion])


def lp(value: float) -> SimpleNamespace:
    return SimpleNamespace(logprob=value, rank=1, decoded_token="x")


def test_engine_runs_with_prefix_caching_and_ignores_the_models_generation_config() -> None:
    kwargs = engine_kwargs(
        "org/model",
        dtype="auto",
        seed=3,
        revision=None,
        gpu_memory_utilization=0.8,
        max_model_len=None,
        max_logprobs=20,
    )
    assert kwargs["enable_prefix_caching"] is True
    assert kwargs["generation_config"] == "vllm"
    assert kwargs["seed"] == 3 and "revision" not in kwargs and "max_model_len" not in kwargs
    pinned = engine_kwargs(
        "m",
        dtype="bfloat16",
        seed=0,
        revision="abc",
        gpu_memory_utilization=0.5,
        max_model_len=4096,
        max_logprobs=64,
    )
    assert pinned["revision"] == "abc" and pinned["max_model_len"] == 4096
    assert pinned["max_logprobs"] == 64


def test_prompts_go_in_as_token_ids() -> None:
    assert token_prompts([(1, 2, 3), [4]]) == [
        {"prompt_token_ids": [1, 2, 3]},
        {"prompt_token_ids": [4]},
    ]


def test_generation_sampling_is_greedy_and_explicit() -> None:
    params = generation_sampling(GenerationRequest(83, frozenset({2, 7}), seed=5))
    assert params == {
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": 83,
        "seed": None,  # greedy needs no seed
        "stop_token_ids": [2, 7],
        "ignore_eos": False,
        "skip_special_tokens": True,
    }
    sampled = GenerationRequest(10, frozenset({2}), temperature=0.7, seed=5)
    assert generation_sampling(sampled)["seed"] == 5


def test_ignore_stop_runs_every_row_to_the_cap() -> None:
    forced = generation_sampling(GenerationRequest(40, frozenset({2, 7}), ignore_stop=True))
    assert forced["ignore_eos"] is True and forced["stop_token_ids"] == []
    assert forced["max_tokens"] == 40


def test_logprob_sampling_asks_for_one_greedy_token_and_the_chosen_logprobs() -> None:
    exact = logprob_sampling([11, 12, 13], exact_ids=True)
    assert exact == {
        "max_tokens": 1,
        "temperature": 0.0,
        "detokenize": False,
        "logprob_token_ids": [11, 12, 13],
    }
    fallback = logprob_sampling([11, 12, 13], exact_ids=False, top_logprobs=40)
    assert fallback["logprobs"] == 40 and "logprob_token_ids" not in fallback
    assert fallback["max_tokens"] == 1 and fallback["temperature"] == 0.0


def test_feature_detection_reads_struct_or_dataclass_fields() -> None:
    class Struct:
        __struct_fields__ = ("temperature", "logprob_token_ids")

    class Old:
        __struct_fields__ = ("temperature", "logprobs")

    assert supports_field(Struct, "logprob_token_ids")
    assert not supports_field(Old, "logprob_token_ids")


def test_read_generation() -> None:
    text, tokens, stopped = read_generation(fake_output([5, 6, 2], "[2] > [1]"))
    assert (text, tokens, stopped) == ("[2] > [1]", (5, 6, 2), True)
    assert read_generation(fake_output([5], "[2", finish_reason="length"))[2] is False


def test_read_next_token_keeps_the_chosen_logprobs_and_their_mass() -> None:
    ids = [11, 12, 13]
    step = {11: lp(-1.0), 12: lp(-3.0), 13: lp(-2.0), 99: lp(-0.1)}  # 99: sampled non-id
    read = read_next_token([fake_output([11], logprobs=[step])], ids)
    assert read.logprobs.tolist() == [[-1.0, -3.0, -2.0]]
    total = math.log(math.exp(-1.0) + math.exp(-3.0) + math.exp(-2.0))
    assert read.mass == pytest.approx((math.exp(total),))
    assert read.missing == (0,) and read.generated_tokens == (1,) and read.top_is_chosen == (True,)


def test_read_next_token_counts_chosen_tokens_missing_from_top_k() -> None:
    step = {12: lp(-0.5), 99: lp(-0.2)}  # plain floats are accepted too, see below
    floats = fake_output([11], logprobs=[{11: -1.0, 12: -1.0}])
    empty = fake_output([5], logprobs=None)
    read = read_next_token([fake_output([99], logprobs=[step]), floats], [11, 12, 13])
    assert read.logprobs.tolist() == [[-math.inf, -0.5, -math.inf], [-1.0, -1.0, -math.inf]]
    assert read.missing == (2, 1) and read.top_is_chosen == (False, True)
    assert read.mass[1] == pytest.approx(2 * math.exp(-1.0))
    nothing = read_next_token([empty], [11])
    assert nothing.logprobs.tolist() == [[-math.inf]] and nothing.mass == (0.0,)


def test_a_first_output_of_several_tokens_is_refused() -> None:
    from harness.rerankers.methods.first import first_result

    read = read_next_token([fake_output([11, 12, 2], logprobs=[{11: lp(-1.0)}])], [11, 12])
    assert read.generated_tokens == (3,)
    with pytest.raises(HarnessError, match="fell back to generation"):
        first_result(
            read.logprobs[0].tolist(),
            ["a", "b"],
            generated_tokens=read.generated_tokens[0],
            top_is_identifier=read.top_is_chosen[0],
            identifier_mass=read.mass[0],
            prompt_tokens=10,
        )


def test_non_embedded_models_pass_through() -> None:
    assert resolve_vllm_model("castorini/first_mistral") == "castorini/first_mistral"
    assert resolve_vllm_model("/models/local") == "/models/local"


def test_without_vllm_the_presets_name_the_extra() -> None:
    if vllm_backend.importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(MissingExtraError, match=r"harness-rerank\[vllm\]"):
        require_vllm("the first reranker")
    for name in ("first-vllm", "rankgpt-vllm"):
        with pytest.raises(MissingExtraError, match="vllm"):
            build_reranker(resolve_preset(name), RunContext())


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("max_new_tokens: 0", "max_new_tokens must be >= 1"),
        ("ignore_eos: maybe", "param 'ignore_eos' must be true or false"),
        ("temperature: -1", "temperature must be >= 0"),
        ("gpu_memory_utilization: 2", "gpu_memory_utilization must be in"),
    ],
)
def test_vllm_rankgpt_checks_the_shared_settings_before_needing_vllm(
    tmp_path, params: str, message: str
) -> None:
    """The vLLM RankGPT is the one RankGPT class: its settings (ignore_eos, the
    max_new_tokens check) are validated by the same code, before any engine starts."""
    path = tmp_path / "mine.yaml"
    path.write_text(f"name: mine\nadapter: rankgpt\nbackend: vllm\nparams:\n  {params}\n")
    with pytest.raises(HarnessError, match=message):
        build_reranker(load_preset(path), RunContext())


def test_without_a_gpu_the_adapters_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible here")
    real_find_spec = vllm_backend.importlib.util.find_spec

    def pretend_vllm_is_installed(name: str, *args):
        return object() if name == "vllm" else real_find_spec(name, *args)

    monkeypatch.setattr(vllm_backend.importlib.util, "find_spec", pretend_vllm_is_installed)
    with pytest.raises(HarnessError, match="needs a CUDA GPU"):
        require_vllm("the rankgpt reranker on vLLM")
