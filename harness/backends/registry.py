"""Resolve a backend name (``transformers``, ``vllm``, ``openai``) to its class, importing lazily.

Backend modules import their model library only inside methods, so resolving a class to read
its ``capabilities`` and ``engine_params`` costs nothing and happens before any model loads.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from harness.backends.base import Backend, Capability, check_capabilities
from harness.backends.params import ModelParams
from harness.context import RunContext
from harness.errors import HarnessError

BACKENDS: Mapping[str, str] = {
    "transformers": "harness.backends.transformers_backend:TransformersBackend",
    "vllm": "harness.backends.vllm_backend:VllmBackend",
    "openai": "harness.backends.openai_backend:OpenAIBackend",
}
DEFAULT_BACKEND = "transformers"


def backend_class(name: str) -> type[Backend]:
    """The backend class registered under ``name``; a one-line error listing the known ones."""
    target = BACKENDS.get(name)
    if target is None:
        raise HarnessError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def require(method: str, requires: frozenset[Capability], backend: str) -> type[Backend]:
    """The backend class, checked to provide everything ``method`` requires."""
    cls = backend_class(backend)
    others = {name: backend_class(name).capabilities for name in BACKENDS if name != backend}
    check_capabilities(method, requires, backend, cls.capabilities, others)
    return cls


def open_backend(
    name: str, model: ModelParams, engine: Any, context: RunContext, purpose: str
) -> Backend:
    """Load the model behind backend ``name`` (the expensive step; call it last)."""
    return backend_class(name).open(model, engine, context, purpose)
