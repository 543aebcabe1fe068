"""A reranker preset as loaded from its YAML file, and as recorded in a run's results.

One record serves both: ``identity`` is empty in a preset and holds what the adapter reported
about itself (model hash, prompt hash, ...) once a run has loaded it. Importing this module is
cheap, so run-folder readers use it without the reranker machinery.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RerankerPreset:
    name: str
    adapter: str
    description: str = ""
    order_invariant: bool = False  # in results: the preset's declaration OR the adapter's
    params: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    backend: str | None = None  # LLM methods: transformers (default) or vllm
    identity: Mapping[str, Any] = field(default_factory=dict)
    reproduces: str = ""  # the published setup this preset follows, where it follows one
    # Ray resources per actor (num_gpus, num_cpus); flags override. Where it runs, not what it
    # computes: left out of the config hash.
    resources: Mapping[str, float] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """How errors name the preset: its file where it has one."""
        return (
            f"{self.source}: reranker {self.name!r}" if self.source else f"reranker {self.name!r}"
        )

    @property
    def model(self) -> Any:
        return self.identity.get("model")

    @property
    def prompt_hash(self) -> Any:
        return self.identity.get("prompt_sha256", self.identity.get("prompt_hash"))

    def to_dict(self) -> dict[str, Any]:
        """Plain fields; ``backend``, ``identity``, ``reproduces`` and ``resources`` only when
        set, so a preset's dict (and the config hash built from it) is what it was before they
        existed."""
        data: dict[str, Any] = {
            "name": self.name,
            "adapter": self.adapter,
            "description": self.description,
            "order_invariant": self.order_invariant,
            "params": dict(self.params),
            "source": self.source,
        }
        if self.backend is not None:
            data["backend"] = self.backend
        if self.identity:
            data["identity"] = dict(self.identity)
        if self.reproduces:
            data["reproduces"] = self.reproduces
        if self.resources:
            data["resources"] = dict(self.resources)
        return data
