"""Preset resolution: one class per method whatever the backend, typed params checked before
any model loads, and errors that show their real cause."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.rerankers.base import Reranker, RunContext
from harness.rerankers.registry import adapter_class, build_reranker, load_preset, resolve_preset

CONTEXT = RunContext()


def preset_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def build_error(tmp_path: Path, text: str) -> str:
    """The message of the HarnessError that building preset ``text`` raises; one line."""
    with pytest.raises(HarnessError) as caught:
        build_reranker(load_preset(preset_file(tmp_path, text)), CONTEXT)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("old", "method"), [("first-vllm", "first"), ("rankgpt-vllm", "rankgpt")])
def test_old_vllm_preset_names_resolve_to_the_one_class_on_vllm(old: str, method: str) -> None:
    old_preset, plain = resolve_preset(old), resolve_preset(method)
    assert old_preset.backend == "vllm" and plain.backend == "transformers"
    assert adapter_class(old_preset) is adapter_class(plain)
    assert adapter_class(old_preset).__name__ in ("FirstReranker", "RankGPTReranker")


@pytest.mark.parametrize("kind", ["first-vllm", "rankgpt-vllm"])
def test_old_vllm_adapter_kinds_in_edited_copies_still_mean_vllm(tmp_path: Path, kind: str) -> None:
    """A user's copy of an old preset says ``adapter: first-vllm`` and has no backend key:
    it must still build on vLLM (here: fail for want of vLLM, not for want of a class)."""
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here: the preset would start an engine")
    path = preset_file(tmp_path, f"name: mine\nadapter: {kind}\nparams:\n  max_model_len: 4096\n")
    with pytest.raises(HarnessError, match="vllm"):
        build_reranker(load_preset(path), CONTEXT)


def test_unknown_param_lists_the_known_keys(tmp_path: Path) -> None:
    message = build_error(tmp_path, "name: mine\nadapter: first\nparams:\n  windw_size: 10\n")
    assert message.startswith(
        f"{tmp_path / 'mine.yaml'}: reranker 'mine' on backend 'transformers'"
    )
    assert "unknown param 'windw_size'" in message
    assert "window_size" in message and "identifiers" in message and "model" in message


def test_wrong_type_names_file_key_and_type(tmp_path: Path) -> None:
    path = preset_file(tmp_path, "name: mine\nadapter: rankgpt\nparams:\n  window_size: twenty\n")
    with pytest.raises(HarnessError, match=r"mine\.yaml.*param 'window_size' must be an integer"):
        build_reranker(load_preset(path), CONTEXT)
    path = preset_file(tmp_path, "name: mine\nadapter: pointwise\nparams:\n  model: 3\n")
    with pytest.raises(HarnessError, match=r"param 'model' must be a string, got 3 \(int\)"):
        build_reranker(load_preset(path), CONTEXT)


def test_bad_values_fail_before_any_model_loads(tmp_path: Path) -> None:
    # model names a file that does not exist: reaching the loader would be a different error
    path = preset_file(
        tmp_path, "name: mine\nadapter: first\nparams:\n  model: /nope.gguf\n  stride: 0\n"
    )
    with pytest.raises(HarnessError, match="stride"):
        build_reranker(load_preset(path), CONTEXT)


def test_a_setting_of_the_other_backend_is_named_as_such(tmp_path: Path) -> None:
    text = "name: mine\nadapter: first\nparams:\n  gpu_memory_utilization: 0.5\n"
    assert "'gpu_memory_utilization' is a setting of backend 'vllm'" in build_error(tmp_path, text)


def test_capability_error_names_method_and_backend(tmp_path: Path) -> None:
    message = build_error(tmp_path, "name: mine\nadapter: invarirank\nbackend: vllm\n")
    assert message == (
        "reranker 'invarirank' needs add_tokens, masked_forward, which backend 'vllm' does not "
        "provide; use backend: transformers"
    )


def test_unknown_backend_and_backend_on_a_control(tmp_path: Path) -> None:
    path = preset_file(tmp_path, "name: mine\nadapter: first\nbackend: onnx\n")
    with pytest.raises(HarnessError, match="unknown backend 'onnx'; use one of transformers, vllm"):
        build_reranker(load_preset(path), CONTEXT)
    path = preset_file(tmp_path, "name: mine\nadapter: identity\nbackend: vllm\n")
    with pytest.raises(HarnessError, match="adapter 'identity' takes no backend"):
        build_reranker(load_preset(path), CONTEXT)


class BrokenInside(Reranker):
    """An adapter whose constructor has a bug (a TypeError of its own)."""

    def __init__(self, name: str, context: RunContext, size: int = 1) -> None:
        super().__init__(name, context)
        len(size)  # type: ignore[arg-type]  # the bug

    def _rerank_batch(self, candidate_set, orders):  # pragma: no cover - never built
        raise AssertionError


def test_a_type_error_inside_a_constructor_is_not_called_bad_params(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = type(sys)("broken_adapter_for_test")
    module.BrokenInside = BrokenInside  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "broken_adapter_for_test", module)
    path = preset_file(
        tmp_path, "name: mine\nadapter: broken_adapter_for_test:BrokenInside\nparams: {size: 3}\n"
    )
    with pytest.raises(TypeError, match="has no len"):
        build_reranker(load_preset(path), CONTEXT)
    text = "name: mine\nadapter: broken_adapter_for_test:BrokenInside\nparams: {sise: 3}\n"
    assert build_error(tmp_path, text).endswith("unknown param 'sise'; known params: size")


def test_an_unimportable_adapter_module_is_named(tmp_path: Path) -> None:
    message = build_error(tmp_path, "name: mine\nadapter: no_such_pkg.rerankers:Mine\n")
    assert "cannot import module 'no_such_pkg.rerankers'" in message
    assert "ModuleNotFoundError: No module named 'no_such_pkg'" in message


def test_backend_key_must_be_a_string(tmp_path: Path) -> None:
    path = preset_file(tmp_path, "name: mine\nadapter: first\nbackend: [vllm]\n")
    with pytest.raises(HarnessError, match="'backend' must be a string"):
        load_preset(path)


def test_to_dict_carries_backend_only_when_set() -> None:
    assert "backend" not in resolve_preset("invarirank").to_dict()
    assert resolve_preset("first-vllm").to_dict()["backend"] == "vllm"


def test_an_adapter_module_that_fails_on_import_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "syntax_broken_adapter.py").write_text("def oops(:\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    message = build_error(tmp_path, "name: mine\nadapter: syntax_broken_adapter:Mine\n")
    assert "cannot import module 'syntax_broken_adapter'" in message
    assert "SyntaxError" in message


def test_too_many_alpha_identifiers_fail_before_any_model_loads(tmp_path: Path) -> None:
    text = (
        "name: mine\nadapter: first\nparams:\n  model: /nope.gguf\n  window_size: 30\n"
        "  stride: 10\n"
    )
    assert "alpha identifiers go up to 26" in build_error(tmp_path, text)


def test_order_invariant_must_be_a_boolean(tmp_path: Path) -> None:
    path = preset_file(tmp_path, "name: mine\nadapter: identity\norder_invariant: 'false'\n")
    with pytest.raises(HarnessError, match="'order_invariant' must be true or false"):
        load_preset(path)
