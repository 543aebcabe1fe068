"""The backend layer: capability checks, typed params, lazy imports, and the transformers
backend's operations against plain uncached forward passes on a tiny random Llama."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from harness.backends.base import Backend, Capability, TokenBatch, check_capabilities
from harness.backends.params import ModelParams, TransformersParams, VllmParams
from harness.backends.registry import BACKENDS, backend_class
from harness.errors import HarnessError
from harness.rerankers.base import RunContext
from harness.rerankers.params import FirstParams, RankGPTParams, split_params


class NoCapabilities(Backend):
    """An honest fake: a backend that declares it can do nothing."""

    name = "nothing"
    capabilities = frozenset()

    def identity(self) -> dict[str, Any]:
        return {"name": "none"}


@pytest.mark.parametrize(
    ("module", "cls"),
    [
        ("harness.rerankers.methods.first", "FirstReranker"),
        ("harness.rerankers.methods.rankgpt", "RankGPTReranker"),
        ("harness.rerankers.methods.pointwise", "PointwiseReranker"),
        ("harness.rerankers.methods.invarirank", "InvariRankReranker"),
    ],
)
def test_a_method_on_a_backend_lacking_a_capability_is_a_one_line_error(
    module: str, cls: str
) -> None:
    method = getattr(__import__(module, fromlist=[cls]), cls)
    with pytest.raises(HarnessError) as caught:
        method("mine", RunContext(), NoCapabilities())
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"reranker {method.method!r} needs ")
    assert "which backend 'nothing' does not provide" in message
    for capability in method.requires:
        assert capability.value in message


def test_capability_check_suggests_the_backends_that_have_everything() -> None:
    needs = frozenset({Capability.MASKED_FORWARD})
    providers = {name: backend_class(name).capabilities for name in BACKENDS}
    with pytest.raises(HarnessError, match=r"use backend: transformers$"):
        check_capabilities("lft", needs, "vllm", providers["vllm"], providers)
    check_capabilities("lft", needs, "transformers", providers["transformers"], providers)
    assert Capability.MASKED_FORWARD not in providers["vllm"]
    assert Capability.ADD_TOKENS in providers["transformers"]


def test_asking_a_backend_for_what_it_lacks_names_both() -> None:
    backend = NoCapabilities()
    with pytest.raises(HarnessError, match="backend 'nothing' does not provide tokenizer"):
        _ = backend.tokenizer
    with pytest.raises(HarnessError, match="does not provide query_attention"):
        _ = backend.attention_shape


def test_backend_modules_import_no_model_library() -> None:
    code = (
        "import sys, harness.rerankers.registry, harness.backends.transformers_backend, "
        "harness.backends.vllm_backend, harness.rerankers.methods.first, "
        "harness.rerankers.methods.invarirank\n"
        "heavy = [m for m in ('torch', 'transformers', 'vllm') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_token_batch_marks_the_common_token_prefix() -> None:
    batch = TokenBatch.of([[1, 2, 3, 4], [1, 2, 9, 5, 6]], [1, 2, 3])
    assert batch.prefix_len == 2 and batch.prefix == (1, 2)
    assert TokenBatch.of([[1, 2]], [1, 2]).prefix_len == 1  # each row keeps a token


def test_split_params_types_and_owners() -> None:
    model, engine, method = split_params(
        "here",
        {"model": "m", "temperature": 1, "max_new_tokens": None, "top_logprobs": 5},
        (ModelParams, VllmParams, RankGPTParams),
    )
    assert model == ModelParams(model="m")
    assert engine.top_logprobs == 5
    assert method.temperature == 1.0 and isinstance(method.temperature, float)
    with pytest.raises(HarnessError, match="here: param 'window_size' must be an integer"):
        split_params("here", {"window_size": True}, (FirstParams,))
    with pytest.raises(HarnessError, match=r"param 'max_history' must be an integer \(or null\)"):
        split_params("here", {"max_history": "ten"}, (FirstParams,))
    with pytest.raises(HarnessError, match="here: attn_implementation must be one of"):
        split_params("here", {"attn_implementation": "flash_attention_2"}, (ModelParams,))
    assert split_params("here", {}, (TransformersParams,)) == (TransformersParams(),)


# -- the transformers backend on a tiny random model ------------------------------------------

torch = pytest.importorskip("torch", reason="the llm extra (torch) is not installed")
pytest.importorskip("transformers", reason="the llm extra (transformers) is not installed")

from harness.backends.base import MaskedRequest  # noqa: E402
from harness.backends.transformers_backend import TransformersBackend  # noqa: E402
from harness.models.loading import build_tiny_llama  # noqa: E402


@pytest.fixture(scope="module")
def eager() -> TransformersBackend:
    return TransformersBackend(build_tiny_llama(seed=2, attn_implementation="eager"))


def plain_logprobs(backend: TransformersBackend, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        logits = backend.loaded.model(input_ids=torch.tensor([ids])).logits[0]
    return logits.float().log_softmax(dim=-1)


def test_next_token_logprobs_on_a_shared_prefix_equal_separate_passes(
    eager: TransformersBackend,
) -> None:
    prefix = [5, 6, 7, 8]
    rows = [[*prefix, 9], [*prefix, 10, 11, 12], [*prefix, 13, 14]]
    chosen = [3, 40, 41]
    read = eager.next_token_logprobs(TokenBatch.of(rows, prefix), chosen)
    assert read.prefix_computed and read.generated_tokens == (1, 1, 1)
    for row, got, mass in zip(rows, read.logprobs, read.mass, strict=True):
        expected = plain_logprobs(eager, row)[-1]
        assert np.abs(got - expected[chosen].numpy()).max() < 1e-5
        assert mass == pytest.approx(float(expected[chosen].exp().sum()), abs=1e-6)
    # The cached prefix is reused. The same rows again run the same kernels on the same shapes,
    # so they are bit-identical; fewer rows are other shapes, and CPUs whose kernels split
    # the work by shape (oneDNN's AMX/AVX-512 paths) round differently: equal within 1e-5,
    # the tolerance against separate passes above.
    again = eager.next_token_logprobs(TokenBatch.of(rows, prefix), chosen)
    assert not again.prefix_computed
    assert np.array_equal(again.logprobs, read.logprobs)
    fewer = eager.next_token_logprobs(TokenBatch.of(rows[:2], prefix), chosen)
    assert not fewer.prefix_computed
    assert np.abs(np.asarray(fewer.logprobs) - np.asarray(read.logprobs[:2])).max() < 1e-5


def test_masked_forward_with_a_causal_pattern_equals_a_plain_pass(
    eager: TransformersBackend,
) -> None:
    span, rest = [4, 5, 6], np.array([[7, 8, 9, 10], [10, 9, 8, 7]])
    length = rest.shape[1]
    allowed = np.concatenate([np.ones((length, 3), bool), np.tri(length, dtype=bool)], 1)
    rows, columns = np.nonzero(np.ones_like(rest, dtype=bool)[:, 1:])
    request = MaskedRequest(
        tokens=rest,
        positions=np.broadcast_to(3 + np.arange(length), rest.shape).copy(),
        allowed=np.broadcast_to(allowed, (2, length, 3 + length)).copy(),
        target_rows=rows,
        target_columns=columns + 1,
    )
    got = eager.masked_logprobs(eager.prefix(span), request)
    for r in range(2):
        full = plain_logprobs(eager, span + rest[r].tolist())
        expected = [float(full[2 + c, rest[r, c]]) for c in range(1, length)]
        assert np.abs(got[rows == r] - expected).max() < 1e-5


def test_masked_forward_reads_given_targets_past_the_last_run_token(
    eager: TransformersBackend,
) -> None:
    """A row's last token, whose output nothing reads, need not run: its log-prob comes from
    the column before it, with the token id given (``target_tokens``)."""
    span, rest = [4, 5, 6], np.array([[7, 8, 9, 10]])
    allowed = np.concatenate([np.ones((3, 3), bool), np.tri(3, dtype=bool)], 1)[None]
    request = MaskedRequest(
        tokens=rest[:, :3],
        positions=3 + np.arange(3)[None],
        allowed=allowed,
        target_rows=np.zeros(3, dtype=np.int64),
        target_columns=np.array([1, 2, 3]),
        target_tokens=rest[0, 1:],
    )
    got = eager.masked_logprobs(eager.prefix(span), request)
    full = plain_logprobs(eager, span + rest[0].tolist())
    expected = [float(full[2 + c, rest[0, c]]) for c in range(1, 4)]
    assert np.abs(got - expected).max() < 1e-5


def test_attention_weights_are_causal_distributions(eager: TransformersBackend) -> None:
    weights = eager.attention_weights([3, 4, 5, 6, 7])
    assert weights.shape == (2, 4, 5, 5)  # layers, heads, query, key
    assert np.allclose(weights.sum(axis=-1), 1.0, atol=1e-5)
    assert np.all(np.triu(weights, k=1) == 0.0)


def test_attention_weights_need_eager_attention() -> None:
    sdpa = TransformersBackend(build_tiny_llama(seed=2))
    with pytest.raises(HarnessError, match="attention weights need attn_implementation: eager"):
        sdpa.attention_weights([1, 2, 3])


def test_length_groups_sort_rows_and_bound_the_padding() -> None:
    from harness.backends.base import length_groups

    lengths = [30, 5, 6, 29, 5, 100, 31]
    groups = length_groups(lengths, slack=0.25)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(lengths)))
    assert [g.tolist() for g in groups] == [[1, 4, 2], [3, 0, 6], [5]]
    for group in groups:
        size = np.array(lengths)[group]
        assert len(size) * size.max() <= 1.25 * size.sum()
    assert [g.tolist() for g in length_groups([7, 7, 7])] == [[0, 1, 2]]
    assert length_groups([]) == []


def test_wait_policy_spins_only_on_an_idle_machine_and_the_user_wins() -> None:
    from harness.backends.threads import apply_wait_policy, wait_policy

    assert wait_policy(0.1, 2) == "ACTIVE"
    assert wait_policy(1.5, 2) == "PASSIVE"
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert apply_wait_policy(env) == "ACTIVE" and env == {"OMP_WAIT_POLICY": "ACTIVE"}
    chosen: dict[str, str] = {}
    assert apply_wait_policy(chosen) in {"ACTIVE", "PASSIVE"} and "OMP_WAIT_POLICY" in chosen
