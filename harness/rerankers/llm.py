"""Base of the rerankers written once against a model backend.

A method class declares the capabilities it ``requires`` and its typed ``params_type``; it is
constructed as ``Method(name, context, backend, params)``. The registry builds the params and
checks the capabilities from the classes alone, before the backend loads a model; the
constructor checks the capabilities again for a backend handed in directly (tests,
benchmarks).
"""

from __future__ import annotations

from typing import Any, ClassVar

from harness.backends.base import Backend, Capability, check_capabilities
from harness.rerankers.base import Reranker, RunContext


class BackendReranker(Reranker):
    """A reranking method on a :class:`Backend`."""

    method: ClassVar[str]
    requires: ClassVar[frozenset[Capability]]
    params_type: ClassVar[type]

    def __init__(
        self, name: str, context: RunContext, backend: Backend, params: Any = None
    ) -> None:
        super().__init__(name, context)
        check_capabilities(self.method, self.requires, backend.name, backend.capabilities)
        self.backend = backend
        self.params = params if params is not None else self.params_type()
        if not isinstance(self.params, self.params_type):
            raise TypeError(
                f"{type(self).__name__} takes {self.params_type.__name__}, "
                f"got {type(self.params).__name__}"
            )

    def identity(self) -> dict[str, Any]:
        return {
            **super().identity(),
            "method": self.method,
            "backend": self.backend.name,
            "model": self.backend.identity(),
        }

    @property
    def parallel_calls(self) -> int:
        """Calls the runner may make at once: what the backend allows (a remote server's
        ``concurrency``; 1 for in-process models)."""
        return self.backend.parallel_calls

    def close(self) -> None:
        self.backend.close()
