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
    weights; needs the ``peft`` extra)."""

    adapter_path: str | None = None


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
