"""Typed model and engine settings of the backends, validated when built.

A preset's flat ``params`` mapping is split among these and the method's own params (see
:mod:`harness.rerankers.params`); the device comes from the run context, not the preset.
Validation that needs no model runs here, so a bad value fails before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


@dataclass(frozen=True)
class ModelParams:
    """Which model and how to run it, on any backend: ``model`` (an embedded name, a
    ``.gguf`` path, a folder or a hub id), ``dtype`` (unset: the backend's default,
    transformers ``float32``, vLLM ``auto``), ``revision`` (hub models),
    ``attn_implementation`` (transformers: ``sdpa`` or ``eager``, never FlashAttention-2,
    which cannot take custom 4-D masks; vLLM chooses its own kernels and ignores it, so a
    preset switches backend with one key)."""

    model: str = "smollm2-135m"
    dtype: str | None = None
    revision: str | None = None
    attn_implementation: str = "sdpa"

    def __post_init__(self) -> None:
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise HarnessError(
                f"attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)} "
                f"(masked scoring needs arbitrary 4-D masks), got {self.attn_implementation!r}"
            )


@dataclass(frozen=True)
class TransformersParams:
    """transformers-only settings: ``adapter_path`` (a PEFT LoRA adapter merged into the
    weights; needs the ``peft`` extra); ``prefix_sharing``: causal prompts of one call (lft's
    orders, FIRST's windows) run each distinct token prefix once, on a prefix tree with KV
    caches reused from a node to its children (:mod:`harness.backends.prefix_tree`); exact up
    to float rounding, never used for InvariRank."""

    adapter_path: str | None = None
    prefix_sharing: bool = True


@dataclass(frozen=True)
class VllmParams:
    """vLLM engine settings; ``top_logprobs`` is used only where the installed vLLM cannot
    return log-probs of chosen token ids."""

    gpu_memory_utilization: float = 0.85
    max_model_len: int | None = None
    top_logprobs: int = 20

    def __post_init__(self) -> None:
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise HarnessError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if self.max_model_len is not None and self.max_model_len < 1:
            raise HarnessError(f"max_model_len must be >= 1, got {self.max_model_len}")
        if self.top_logprobs < 1:
            raise HarnessError(f"top_logprobs must be >= 1, got {self.top_logprobs}")


OPENAI_ENDPOINTS = ("completions", "chat")


@dataclass(frozen=True)
class OpenAIParams:
    """Settings of an OpenAI-compatible HTTP server (vLLM, SGLang, TGI, llama.cpp, a hosted API).
    ``model`` (the model params) is the name sent in each request.

    ``base_url`` (up to and including ``/v1``); ``api_key_env``: the NAME of the environment
    variable holding the API key (the key itself is never written anywhere); ``tokenizer``: the
    local tokenizer that renders prompts and counts tokens (unset: the model's name, which must
    then be loadable here — an embedded name, a folder or a hub id); ``endpoint``:
    ``completions`` (prompts sent exactly as rendered, answers primed where the method primes
    them) or ``chat`` (the method's chat turns sent as messages, the server's chat template,
    log-probs of the reply's first token); ``concurrency``: requests in flight; ``timeout``:
    seconds per request; ``max_retries`` on 429/5xx/connection errors/timeouts, waiting
    ``retry_backoff`` * 2^attempt seconds with jitter (at most ``max_backoff``) or what
    ``Retry-After`` asks; ``top_logprobs``: alternatives asked for per token; ``logit_bias``:
    FIRST and pointwise push their answer tokens into the top alternatives with a bias of
    ``+logit_bias_value``; ``cache``: answers kept on disk (``cache_dir``, default
    ``~/.cache/harness/http``) so nothing is sent twice; ``invalid_retries``: how many times an
    answer that cannot be read (no log-probs, no text, another model) is asked again before the
    request fails; ``served_model``: the id ``GET /models`` lists that the preset accepts when
    it is not ``model`` itself (an alias or a path the server names the model by)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str | None = None
    tokenizer: str | None = None
    endpoint: str = "completions"
    concurrency: int = 4
    timeout: float = 120.0
    max_retries: int = 4
    retry_backoff: float = 0.5
    max_backoff: float = 30.0
    top_logprobs: int = 20
    logit_bias: bool = True
    logit_bias_value: float = 100.0
    cache: bool = True
    cache_dir: str | None = None
    invalid_retries: int = 2
    served_model: str | None = None

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise HarnessError(
                f"base_url must start with http:// or https://, got {self.base_url!r}"
            )
        if self.endpoint not in OPENAI_ENDPOINTS:
            raise HarnessError(
                f"endpoint must be one of {', '.join(OPENAI_ENDPOINTS)}, got {self.endpoint!r}"
            )
        if self.api_key_env is not None and not self.api_key_env.isidentifier():
            raise HarnessError(
                "api_key_env names an environment variable (such as OPENAI_API_KEY), "
                "not the key itself (the value given is not a variable name)"
            )
        if self.concurrency < 1:
            raise HarnessError(f"concurrency must be >= 1, got {self.concurrency}")
        if not self.timeout > 0:
            raise HarnessError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.max_retries < 0:
            raise HarnessError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.retry_backoff < 0 or self.max_backoff < 0:
            raise HarnessError("retry_backoff and max_backoff must be >= 0")
        if self.top_logprobs < 1:
            raise HarnessError(f"top_logprobs must be >= 1, got {self.top_logprobs}")
        if self.invalid_retries < 0:
            raise HarnessError(f"invalid_retries must be >= 0, got {self.invalid_retries}")
        if self.served_model is not None and not self.served_model.strip():
            raise HarnessError("served_model names a model id the server lists; it is empty")
