"""``harness select-heads``: score every head of an ICR preset on a labelled held-out split and
keep the best (the criterion and the artifact are in :mod:`harness.rerankers.methods.heads`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from harness.context import RunContext
from harness.data.model import Dataset
from harness.data.registry import load_dataset, resolve_card
from harness.data.trec import has_relevant
from harness.errors import HarnessError
from harness.rerankers.methods.heads import HeadSelection, per_head_ndcg, top_heads
from harness.rerankers.methods.icr import IcrReranker, head_scores
from harness.rerankers.registry import build_reranker, check_preset, resolve_preset
from harness.tools.split import probe_split


def select_heads(
    reranker: str,
    dataset: str,
    out: Path,
    *,
    split_queries: int,
    depth: int | None,
    top: int,
    context: RunContext,
) -> HeadSelection:
    """``harness select-heads``: score every head of the ICR preset ``reranker`` on the split
    of ``dataset`` (identity order), keep the ``top`` heads and write the artifact."""
    from harness import __version__

    preset = resolve_preset(reranker)
    check_preset(preset)
    if preset.params.get("heads") or preset.params.get("heads_file"):
        raise HarnessError(f"{preset.where}: select heads with a preset that scores all heads")
    if preset.params.get("calibration", "masked") == "none":
        raise HarnessError(f"{preset.where}: head selection needs the calibration query")
    card = resolve_card(dataset)
    loaded = load_dataset(card)
    split = probe_split(loaded, split_queries, depth)
    split = _judged(split)
    model = build_reranker(preset, context)
    try:
        if not isinstance(model, IcrReranker):
            raise HarnessError(f"{preset.where}: select-heads needs an icr preset")
        per_set = []
        for candidate_set in split.sets:
            model.check_data(candidate_set)
            identity = np.arange(len(candidate_set))[None]
            per_set.append(head_scores(model.read(candidate_set, identity))[0])
        table = per_head_ndcg(
            per_set,
            [s.doc_ids for s in split.sets],
            [s.query_id for s in split.sets],
            split.qrels,
        )
        provenance = {
            "dataset": card.name,
            "dataset_fingerprint": loaded.fingerprint,
            "split_queries": len(split.sets),
            "split_query_ids": [s.query_id for s in split.sets],
            "depth": depth,
            "top": top,
            "preset": preset.to_dict(),
            "model": model.backend.identity(),
            "harness_version": __version__,
        }
    finally:
        model.close()
    selection = HeadSelection(top_heads(table, top), table, provenance)
    selection.save(out)
    return selection


def _judged(split: Dataset) -> Dataset:
    """The split's sets that have a relevant judgment (nDCG is undefined for the others)."""
    kept = tuple(s for s in split.sets if has_relevant(split.qrels.get(s.query_id)))
    if not kept:
        raise HarnessError("no query of the head-selection split has a relevant judgment")
    return dataclasses.replace(split, sets=kept)
