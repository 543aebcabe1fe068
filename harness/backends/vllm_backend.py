"""The vLLM backend (GPU only): the same methods, prompts and checks as on transformers.

* prompts go in as token ids (``{"prompt_token_ids": [...]}``), tokenized exactly as on
  transformers, so vLLM never adds a second BOS to a chat-templated prompt;
* generation: explicit ``temperature`` (vLLM's own default is 1.0), ``max_tokens`` = the
  method's cap, the model's end-of-turn tokens as stop tokens, ``ignore_eos`` when asked;
* next-token log-probs: ``max_tokens`` 1, ``temperature`` 0, log-probabilities of exactly the
  chosen tokens (``logprob_token_ids`` where the installed vLLM has it; else the top
  ``top_logprobs`` tokens, with chosen tokens outside them counted as missing);
* the engine runs with automatic prefix caching, so the shared prefix of a batch is computed
  once; ``generation_config="vllm"`` keeps a model's own generation config from changing
  sampling defaults.

Everything that builds requests or reads results is a pure function, unit-tested without
vLLM. Opening the backend fails with a clear message where vLLM or a CUDA GPU is missing.
vLLM takes no custom attention masks, so InvariRank and lft stay on transformers.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from harness.backends.base import (
    Backend,
    Capability,
    Generation,
    GenerationRequest,
    NextTokenScores,
    TokenBatch,
    eos_token_ids,
)
from harness.backends.params import ModelParams, VllmParams
from harness.context import RunContext
from harness.errors import HarnessError, MissingExtraError

DEFAULT_TOP_LOGPROBS = 20  # the engine's max_logprobs floor
DEFAULT_DTYPE = "auto"


def require_vllm(purpose: str) -> None:
    """Raise unless vLLM is installed and torch sees a CUDA GPU."""
    if importlib.util.find_spec("vllm") is None:
        raise MissingExtraError("vllm", "vllm", purpose)
    import torch

    if not torch.cuda.is_available():
        raise HarnessError(
            f"{purpose} runs on vLLM, which needs a CUDA GPU, and torch sees none here; "
            "use backend: transformers on a CPU"
        )


def resolve_vllm_model(name: str) -> str:
    """What vLLM should load: the converted safetensors folder for an embedded model
    (converted once by the model layer if needed); any other name or path as given."""
    from harness.models import loading

    if name not in loading.EMBEDDED_MODELS:
        return name
    folder = loading.converted_gguf_dir(
        loading.embedded_gguf_path(name), loading.model_cache_root()
    )
    if not (folder / loading.CONVERSION_META).is_file():
        loading.load_model(name, purpose="converting the embedded model for vLLM")
    return str(folder)


def engine_kwargs(
    model: str,
    *,
    dtype: str,
    seed: int,
    revision: str | None,
    gpu_memory_utilization: float,
    max_model_len: int | None,
    max_logprobs: int,
) -> dict[str, Any]:
    """Arguments for ``vllm.LLM``: prefix caching on, the model's generation config ignored."""
    kwargs: dict[str, Any] = {
        "model": model,
        "dtype": dtype,
        "seed": seed,
        "enable_prefix_caching": True,
        "generation_config": "vllm",
        "gpu_memory_utilization": gpu_memory_utilization,
        "max_logprobs": max_logprobs,
    }
    if revision is not None:
        kwargs["revision"] = revision
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    return kwargs


def token_prompts(rows: Sequence[Sequence[int]]) -> list[dict[str, list[int]]]:
    """vLLM prompts given as token ids, one per row."""
    return [{"prompt_token_ids": list(row)} for row in rows]


def generation_sampling(request: GenerationRequest) -> dict[str, Any]:
    """``SamplingParams`` arguments for generation (greedy at temperature 0).

    Everything that could change the output is explicit: vLLM's own default temperature is 1.
    ``ignore_stop`` maps to ``ignore_eos`` with no stop tokens, so every row runs to the cap.
    """
    sampled = request.temperature > 0
    return {
        "temperature": float(request.temperature),
        "top_p": 1.0,
        "max_tokens": int(request.max_new_tokens),
        "seed": request.seed if sampled else None,
        "stop_token_ids": [] if request.ignore_stop else sorted(request.stop_ids),
        "ignore_eos": bool(request.ignore_stop),
        "skip_special_tokens": True,
    }


def logprob_sampling(
    token_ids: Sequence[int], exact_ids: bool, top_logprobs: int = DEFAULT_TOP_LOGPROBS
) -> dict[str, Any]:
    """``SamplingParams`` arguments for one greedy token and the chosen tokens' log-probs.

    ``exact_ids``: the installed vLLM has ``logprob_token_ids`` (log-probs of exactly these
    ids); otherwise the top ``top_logprobs`` tokens are requested.
    """
    params: dict[str, Any] = {"max_tokens": 1, "temperature": 0.0, "detokenize": False}
    if exact_ids:
        params["logprob_token_ids"] = list(token_ids)
    else:
        params["logprobs"] = int(top_logprobs)
    return params


def supports_field(cls: Any, name: str) -> bool:
    """Whether a (msgspec or dataclass) parameter class has a field — feature detection across
    vLLM versions."""
    fields = getattr(cls, "__struct_fields__", None) or getattr(cls, "__dataclass_fields__", {})
    return name in fields


def read_generation(output: Any) -> tuple[str, tuple[int, ...], bool]:
    """Text, token ids and whether a stop token ended it, from a vLLM ``RequestOutput``."""
    completion = output.outputs[0]
    return completion.text, tuple(completion.token_ids), completion.finish_reason == "stop"


def read_next_token(
    outputs: Sequence[Any], token_ids: Sequence[int], prefix_computed: bool = False
) -> NextTokenScores:
    """The chosen tokens' log-probs from vLLM ``RequestOutput``s of one generated token each
    (``-inf`` and counted as missing where vLLM did not return one)."""
    chosen = set(token_ids)
    rows, mass, top, generated, missing = [], [], [], [], []
    for output in outputs:
        completion = output.outputs[0]
        generated_ids = tuple(completion.token_ids)
        step: Mapping[int, Any] = completion.logprobs[0] if completion.logprobs else {}
        raw = [_logprob(step[i]) if i in step else -math.inf for i in token_ids]
        found = [v for v in raw if v > -math.inf]
        rows.append(raw)
        mass.append(math.exp(_logsumexp(found)) if found else 0.0)
        top.append(bool(generated_ids) and generated_ids[0] in chosen)
        generated.append(len(generated_ids))
        missing.append(len(raw) - len(found))
    return NextTokenScores(
        logprobs=np.array(rows, dtype=np.float32).reshape(len(rows), len(token_ids)),
        mass=tuple(mass),
        top_is_chosen=tuple(top),
        generated_tokens=tuple(generated),
        missing=tuple(missing),
        prefix_computed=prefix_computed,
    )


def _logprob(value: Any) -> float:
    return float(getattr(value, "logprob", value))


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


class VllmBackend(Backend):
    """A vLLM engine with automatic prefix caching."""

    name = "vllm"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.TOKENIZER, Capability.NEXT_TOKEN_LOGPROBS, Capability.GENERATE}
    )
    engine_params: ClassVar[type] = VllmParams

    def __init__(self, model: ModelParams, engine: VllmParams, context: RunContext) -> None:
        import vllm
        from vllm import SamplingParams

        self.model_name = model.model
        self.top_logprobs = engine.top_logprobs
        self._path = resolve_vllm_model(model.model)
        self.engine = vllm.LLM(
            **engine_kwargs(
                self._path,
                dtype=model.dtype or DEFAULT_DTYPE,
                seed=context.seed,
                revision=model.revision,
                gpu_memory_utilization=engine.gpu_memory_utilization,
                max_model_len=engine.max_model_len,
                max_logprobs=max(engine.top_logprobs, DEFAULT_TOP_LOGPROBS),
            )
        )
        self._tokenizer = self.engine.get_tokenizer()
        self.exact_ids = supports_field(SamplingParams, "logprob_token_ids")
        self.vllm_version = str(getattr(vllm, "__version__", "unknown"))

    @classmethod
    def open(
        cls, model: ModelParams, engine: VllmParams, context: RunContext, purpose: str
    ) -> VllmBackend:
        require_vllm(purpose)
        return cls(model, engine, context)

    def identity(self) -> dict[str, Any]:
        return {"name": self.model_name, "vllm": self.vllm_version}

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def stop_token_ids(self) -> frozenset[int]:
        from transformers import GenerationConfig

        try:
            config = GenerationConfig.from_pretrained(self._path)
        except OSError:
            config = None
        return eos_token_ids(self.tokenizer, config)

    def next_token_logprobs(self, batch: TokenBatch, token_ids: Sequence[int]) -> NextTokenScores:
        params = logprob_sampling(token_ids, self.exact_ids, self.top_logprobs)
        return read_next_token(self._run(batch, params), token_ids)

    def generate(self, batch: TokenBatch, request: GenerationRequest) -> Generation:
        read = [read_generation(o) for o in self._run(batch, generation_sampling(request))]
        return Generation(
            tokens=tuple(tokens for _, tokens, _ in read),
            texts=tuple(text for text, _, _ in read),
            stopped=tuple(stopped for _, _, stopped in read),
            decode_steps=0,
        )

    def _run(self, batch: TokenBatch, params: dict[str, Any]) -> list[Any]:
        from vllm import SamplingParams

        prompts = token_prompts(batch.rows)
        return list(self.engine.generate(prompts, SamplingParams(**params), use_tqdm=False))
