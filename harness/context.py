"""Run-wide settings every layer that computes may read: the backends below the methods and the
methods themselves. Kept on its own, low, so a backend needs nothing from the rerankers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunContext:
    """Run-wide settings an adapter may need; adapters ignore what does not apply to them."""

    device: str = "cpu"
    seed: int = 0
    batch_size: int = 4
    dry_run: bool = False  # remote backends count the requests they would send, sending none
