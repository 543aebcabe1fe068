"""Resolve a reranker preset (a small YAML file) to an adapter instance, importing lazily.

A preset names an adapter kind and its parameters::

    name: first-stage
    adapter: first-stage          # a kind listed in ADAPTERS, or "package.module:Class"
    description: Sorts by the first-stage score (order-invariant control).
    order_invariant: true
    params: {}

LLM methods take ``backend: transformers`` (the default), ``backend: vllm`` or
``backend: openai`` (an OpenAI-compatible server, :mod:`harness.backends.openai_backend`); their
``params`` is one flat mapping split among the typed model, engine and method params
(:mod:`harness.rerankers.params`), checked before any model loads.

``--reranker NAME`` looks for ``NAME.yaml`` among the bundled presets (the top-level
``rerankers/`` folder of the project); ``--reranker path/to/file.yaml`` loads a copy the user
edited.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.backends.params import ModelParams
from harness.backends.registry import BACKENDS, DEFAULT_BACKEND, backend_class, open_backend
from harness.backends.registry import require as require_backend
from harness.errors import HarnessError
from harness.presets import preset_dir, read_yaml
from harness.rerankers.base import Reranker, RunContext
from harness.rerankers.debiasers.meta import MetaReranker, inner_preset, meta_params, preset_key
from harness.rerankers.llm import BackendReranker
from harness.rerankers.params import split_params
from harness.rerankers.preset import RerankerPreset

# Adapter kind -> "module:Class". Modules are imported only when a preset uses them, so the
# core never pays for torch or transformers. The two "-vllm" kinds are the old names of
# first/rankgpt on vLLM, kept so that edited copies of the old presets still run.
ADAPTERS: Mapping[str, str] = {
    "identity": "harness.rerankers.methods.controls:IdentityReranker",
    "first-stage": "harness.rerankers.methods.controls:FirstStageReranker",
    "invarirank": "harness.rerankers.methods.invarirank:InvariRankReranker",
    "lft": "harness.rerankers.methods.invarirank:CausalListwiseReranker",
    "pointwise": "harness.rerankers.methods.pointwise:PointwiseReranker",
    "first": "harness.rerankers.methods.first:FirstReranker",
    "first-capcal": "harness.rerankers.methods.first:CapCalFirstReranker",
    "rankgpt": "harness.rerankers.methods.rankgpt:RankGPTReranker",
    "first-vllm": "harness.rerankers.methods.first:FirstReranker",
    "rankgpt-vllm": "harness.rerankers.methods.rankgpt:RankGPTReranker",
    "psc": "harness.rerankers.debiasers.meta:PermutationSelfConsistency",
    "bootstrap": "harness.rerankers.debiasers.meta:Bootstrapping",
    "sgs": "harness.rerankers.debiasers.sgs:StochasticGreedySelection",
    "stella": "harness.rerankers.debiasers.stella:Stella",
    "callable": "harness.rerankers.methods.callable:CallableReranker",
    "icr": "harness.rerankers.methods.icr:IcrReranker",
    "llmrank": "harness.rerankers.methods.llmrank:LLMRankReranker",
    # The toolkits people already use (docs/toolkits.md), each an optional extra.
    "rank-llm": "harness.rerankers.toolkits.rank_llm:RankLLMReranker",
    "rerankers": "harness.rerankers.toolkits.answerdotai:AnswerDotAIReranker",
    "llm-rankers": "harness.rerankers.toolkits.llm_rankers:LlmRankersReranker",
    "rankify": "harness.rerankers.toolkits.rankify:RankifyReranker",
}
ADAPTER_BACKENDS: Mapping[str, str] = {"first-vllm": "vllm", "rankgpt-vllm": "vllm"}


def available_presets() -> list[RerankerPreset]:
    """All bundled presets, sorted by name."""
    return [load_preset(path) for path in sorted(preset_dir("rerankers").glob("*.yaml"))]


def resolve_preset(name_or_path: str) -> RerankerPreset:
    """Find a preset by bundled name or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise HarnessError(f"reranker preset file not found: {path}")
        return load_preset(path)
    bundled = preset_dir("rerankers") / f"{name_or_path}.yaml"
    if not bundled.is_file():
        known = ", ".join(p.name for p in available_presets())
        raise HarnessError(f"unknown reranker {name_or_path!r}; known rerankers: {known}")
    return load_preset(bundled)


def load_preset(path: Path) -> RerankerPreset:
    data = read_yaml(path)
    for key in ("name", "adapter"):
        if not isinstance(data.get(key), str):
            raise HarnessError(f"{path}: reranker preset needs a string '{key}'")
    known = {
        "name", "adapter", "description", "order_invariant", "params", "backend", "reproduces",
        "resources",
    }  # fmt: skip
    unknown = set(data) - known
    if unknown:
        raise HarnessError(f"{path}: unknown preset keys {sorted(unknown)}")
    if not isinstance(data.get("order_invariant", False), bool):
        raise HarnessError(f"{path}: 'order_invariant' must be true or false")
    if not isinstance(data.get("reproduces", ""), str):
        raise HarnessError(f"{path}: 'reproduces' must be a string naming the published setup")
    if "backend" in data and not isinstance(data["backend"], str):
        raise HarnessError(f"{path}: 'backend' must be a string such as transformers or vllm")
    params = data.get("params") or {}
    if not isinstance(params, dict):
        raise HarnessError(f"{path}: 'params' must be a mapping")
    return RerankerPreset(
        resources=_resources(path, data.get("resources")),
        name=data["name"],
        adapter=data["adapter"],
        description=str(data.get("description", "")).strip(),
        order_invariant=bool(data.get("order_invariant", False)),
        params=params,
        source=str(path),
        backend=data.get("backend"),
        reproduces=str(data.get("reproduces", "")).strip(),
    )


RESOURCE_KEYS = ("num_gpus", "num_cpus")


def _resources(path: Path, value: Any) -> dict[str, float]:
    """A preset's ``resources``: Ray's ``num_gpus``/``num_cpus`` per actor, numbers >= 0."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HarnessError(
            f"{path}: 'resources' must be a mapping of {' and '.join(RESOURCE_KEYS)}"
        )
    for key, amount in value.items():
        if key not in RESOURCE_KEYS:
            raise HarnessError(
                f"{path}: unknown resources key {key!r}; allowed: {', '.join(RESOURCE_KEYS)}"
            )
        if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
            raise HarnessError(f"{path}: resources {key} must be a number >= 0, got {amount!r}")
    return {key: float(amount) for key, amount in value.items()}


def build_reranker(
    preset: RerankerPreset, context: RunContext, *, _chain: tuple[str, ...] = ()
) -> Reranker:
    """Construct the preset's adapter, checking everything that needs no model first.

    A method on a backend (:class:`BackendReranker`) gets its params split into typed
    dataclasses and its capabilities checked against the backend's class before the backend
    loads the model; a meta-reranker (:class:`~harness.rerankers.debiasers.meta.MetaReranker`) has
    its
    inner preset resolved, checked and built first; any other adapter is called as
    ``Class(name, context, **params)`` after its keys are checked against its signature.
    Errors raised inside a constructor are not caught: a ``TypeError`` there is a bug and
    keeps its traceback.
    """
    cls, typed = _checked(preset, _chain)
    if isinstance(typed, _Meta):
        inner = build_reranker(typed.inner, context, _chain=typed.chain)
        try:
            reranker: Reranker = cls(  # type: ignore[call-arg]
                preset.name, context, inner, typed.inner, typed.params, **typed.extras
            )
        except BaseException:
            inner.close()
            raise
    elif typed is not None:
        name, model, engine, params = typed
        purpose = f"the {getattr(cls, 'method', preset.adapter)} reranker"
        backend = open_backend(name, model, engine, context, purpose)
        reranker = cls(preset.name, context, backend, params)  # type: ignore[call-arg]
    else:
        reranker = cls(preset.name, context, **dict(preset.params))
    if preset.order_invariant:
        reranker.order_invariant = True
    return reranker


def check_preset(preset: RerankerPreset) -> None:
    """Every check :func:`build_reranker` makes before loading a model, without loading one:
    the runner calls it before it writes a run folder, so a bad preset leaves nothing behind.
    A meta-reranker's inner presets are checked too."""
    _checked(preset, ())


def model_preset(preset: RerankerPreset) -> RerankerPreset:
    """The preset whose model computes: ``preset`` itself, or a meta-reranker's innermost."""
    _, typed = _checked(preset, ())
    return model_preset(typed.inner) if isinstance(typed, _Meta) else preset


def device_used(preset: RerankerPreset, device: str) -> str:
    """Where a preset's reranker computes: ``device`` for a model in this process, ``remote``
    for a server, ``none`` for the controls; a meta-reranker computes where its inner one does."""
    backend = backend_of(model_preset(preset))
    if backend is None:  # a control computes nothing; a toolkit says where it computes
        cls = adapter_class(model_preset(preset))
        if getattr(cls, "remote", False):
            return "remote"
        return device if cls.uses_device else "none"
    return "remote" if backend_class(backend).remote else device


@dataclass(frozen=True)
class _Meta:
    """A meta-reranker's checked params, its resolved inner preset and the chain so far."""

    params: Any
    inner: RerankerPreset
    chain: tuple[str, ...]
    extras: Mapping[str, Any]


def _checked(
    preset: RerankerPreset, chain: tuple[str, ...]
) -> tuple[type[Reranker], tuple[str, Any, Any, Any] | _Meta | None]:
    """The adapter class and, for a method on a backend, (backend, model, engine, method)
    params, all validated; for a meta-reranker its params and inner preset, checked in turn."""
    cls = adapter_class(preset)
    if issubclass(cls, MetaReranker):
        if preset.backend is not None:
            raise HarnessError(f"{preset.where}: adapter {preset.adapter!r} takes no backend")
        params = meta_params(cls, preset)
        here = (*chain, preset_key(preset))
        inner = inner_preset(preset, params, here, resolve_preset)
        _checked(inner, here)
        return cls, _Meta(params, inner, here, cls.preset_extras(preset, params))
    if not issubclass(cls, BackendReranker):
        if preset.backend is not None:
            raise HarnessError(f"{preset.where}: adapter {preset.adapter!r} takes no backend")
        _check_keywords(cls, preset)
        return cls, None
    name = backend_of(preset) or DEFAULT_BACKEND
    where = f"{preset.where} on backend {name!r}"
    backend_cls = require_backend(cls.method, cls.requires, name)
    _check_engine_keys(where, preset.params, name)
    model, engine, params = split_params(
        where, preset.params, (ModelParams, backend_cls.engine_params, cls.params_type)
    )
    return cls, (name, model, engine, params)


def adapter_class(preset: RerankerPreset) -> type[Reranker]:
    """Import the preset's adapter class; one-line errors for unknown or unimportable ones."""
    target = ADAPTERS.get(preset.adapter, preset.adapter)
    if ":" not in target:
        known = ", ".join(sorted(ADAPTERS))
        raise HarnessError(
            f"{preset.where}: unknown adapter {preset.adapter!r}; "
            f"use one of {known} or 'package.module:Class'"
        )
    module_name, class_name = target.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any failure of the user's module (syntax, its own raise)
        raise HarnessError(
            f"{preset.where}: cannot import module {module_name!r} for adapter {target!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    cls = getattr(module, class_name, None)
    if cls is None or not (isinstance(cls, type) and issubclass(cls, Reranker)):
        raise HarnessError(f"{preset.where}: {target} is not a Reranker class")
    return cls


def backend_of(preset: RerankerPreset) -> str | None:
    """The backend a preset runs on: its ``backend`` key, the one an old adapter name implies,
    or the default; ``None`` for adapters that load no model (the controls)."""
    if not issubclass(adapter_class(preset), BackendReranker):
        return None
    return preset.backend or ADAPTER_BACKENDS.get(preset.adapter, DEFAULT_BACKEND)


def _check_engine_keys(where: str, params: Mapping[str, Any], backend: str) -> None:
    """A key of another backend's engine settings is named as such, not just as unknown."""
    mine = {f.name for f in dataclasses.fields(backend_class(backend).engine_params)}
    for other in BACKENDS:
        for f in dataclasses.fields(backend_class(other).engine_params):
            if f.name in params and f.name not in mine:
                raise HarnessError(
                    f"{where}: param {f.name!r} is a setting of backend {other!r}; remove it "
                    f"or set backend: {other}"
                )


def _check_keywords(cls: type[Reranker], preset: RerankerPreset) -> None:
    """Unknown params of a plain adapter, reported with the keys its constructor takes."""
    signature = inspect.signature(cls.__init__)
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return
    known = [n for n in signature.parameters if n not in {"self", "name", "context"}]
    unknown = sorted(set(preset.params) - set(known))
    if unknown:
        listed = ", ".join(known) if known else "none"
        raise HarnessError(f"{preset.where}: unknown param {unknown[0]!r}; known params: {listed}")
