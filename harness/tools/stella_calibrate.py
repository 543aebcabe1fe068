"""``harness stella-calibrate``: calibrate STELLA's position-transition matrix on a held-out
probe split and write the artifact a ``stella`` preset reads (see STELLA's module)."""

from __future__ import annotations

from pathlib import Path

from harness.context import RunContext
from harness.data.registry import load_dataset, resolve_card
from harness.rerankers.debiasers.stella import StellaArtifact, calibrate
from harness.rerankers.registry import build_reranker, check_preset, resolve_preset
from harness.tools.split import probe_split


def run_calibration(
    reranker: str,
    dataset: str,
    out: Path,
    *,
    probe_queries: int,
    depth: int | None,
    repeats: int = 5,
    smoothing: float = 1.0,
    seed: int = 0,
    context: RunContext | None = None,
) -> StellaArtifact:
    """``harness stella-calibrate``: calibrate the inner preset ``reranker`` on the probe split
    of ``dataset`` and write the artifact to ``out``."""
    preset = resolve_preset(reranker)
    check_preset(preset)
    card = resolve_card(dataset)
    probe = probe_split(load_dataset(card), probe_queries, depth)
    inner = build_reranker(preset, context or RunContext())
    try:
        artifact = calibrate(
            preset,
            inner,
            probe,
            repeats=repeats,
            smoothing=smoothing,
            seed=seed,
            dataset_name=card.name,
        )
    finally:
        inner.close()
    artifact.save(out)
    return artifact
