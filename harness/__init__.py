"""harness: measure how much an LLM reranker's output depends on candidate order.

The Python API (``evaluate``, ``dry_run``, ``load``, ``from_scores``, ``from_order``, and
``MetricSpec``/``QueryOrders`` to add a metric) is imported on first use, so
``import harness`` and ``harness --help`` stay instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "Evaluation", "MetricSpec", "QueryOrders", "dry_run", "evaluate", "from_order", "from_scores",
    "load",
]  # fmt: skip

_LAZY = {
    "Evaluation": "harness.api",
    "evaluate": "harness.api",
    "dry_run": "harness.api",
    "load": "harness.api",
    "from_scores": "harness.rerankers.methods.callable",
    "from_order": "harness.rerankers.methods.callable",
    "MetricSpec": "harness.metrics.registry",
    "QueryOrders": "harness.metrics.orders",
}

if TYPE_CHECKING:
    from harness.api import Evaluation, dry_run, evaluate, load
    from harness.metrics.orders import QueryOrders
    from harness.metrics.registry import MetricSpec
    from harness.rerankers.methods.callable import from_order, from_scores


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
