"""Choose the attention heads an attention reranker (ICR) scores with, on a labelled split.

HeadRank (arXiv 2604.17237) trains a head selection with an entropy-regularised preference
objective and truncates depth at the deepest selected layer. Reproducing that training is out
of scope here. What ``harness select-heads`` does instead is a simple, documented criterion:
on the LAST ``split_queries`` sets of a dataset (a run's ``--queries N`` evaluates the
first N), each head alone ranks every set in its first-stage order by its calibrated ICR
score (the sum over a candidate's tokens of the attention the query pays minus what the
content-free query pays, in that head), and the ``top`` heads by mean nDCG@10 are kept. ICR
restricted to those heads, with the pass stopped after the deepest of them, is the
"selected-heads ICR" variant: a per-head-nDCG selection, not HeadRank.

The selection is a JSON artifact holding the heads, the per-head nDCG table and its
provenance (dataset and fingerprint, the split's query ids, depth, preset, model identity,
harness version); an ICR preset points at it with ``heads_file``. An ICR reranker using it
refuses to rerank the split's queries (they are not held out) and a model other than the one
it was selected on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.files import read_json_object, write_text_atomic

FORMAT = "harness-head-selection"
FORMAT_VERSION = 1
CRITERION = "per-head nDCG@10 of calibrated ICR scores, first-stage order, top-k"
_PAIR = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_heads(text: str) -> tuple[tuple[int, int], ...]:
    """``"12:3, 14:0"`` -> ((12, 3), (14, 0)); one-line error for anything else."""
    pairs = []
    for part in text.split(","):
        match = _PAIR.match(part)
        if match is None:
            raise HarnessError(
                f"heads must be 'layer:head' pairs separated by commas (e.g. '12:3,14:0'), "
                f"got {part.strip()!r}"
            )
        pairs.append((int(match.group(1)), int(match.group(2))))
    if len(set(pairs)) != len(pairs):
        raise HarnessError(f"heads lists a head twice: {text!r}")
    return tuple(pairs)


@dataclass(frozen=True)
class HeadSelection:
    """Selected (layer, head) pairs, the per-head nDCG table they came from, and provenance."""

    heads: tuple[tuple[int, int], ...]
    ndcg: np.ndarray  # [layers, heads] mean nDCG@10 of each head alone on the split
    provenance: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "criterion": CRITERION,
            "heads": [f"{layer}:{head}" for layer, head in self.heads],
            "deepest_layer": max(layer for layer, _ in self.heads),
            "ndcg_by_head": np.round(self.ndcg, 6).tolist(),
            "provenance": dict(self.provenance),
        }

    def save(self, path: str | Path) -> None:
        import json

        write_text_atomic(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> HeadSelection:
        file = Path(path).expanduser()
        data = read_json_object(file, "head selection (harness select-heads)")
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise HarnessError(
                f"{file}: not a head selection of format {FORMAT} v{FORMAT_VERSION} "
                "(write one with harness select-heads)"
            )
        try:
            heads = parse_heads(",".join(data["heads"]))
            table = np.asarray(data["ndcg_by_head"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise HarnessError(f"{file}: malformed head selection ({exc})") from exc
        return cls(heads, table, data.get("provenance") or {}, str(file))

    def identity(self) -> dict[str, Any]:
        """What a run's provenance records about the selection it scored with."""
        import hashlib
        import json

        payload = json.dumps(self.to_dict(), sort_keys=True).encode()
        keep = ("dataset", "dataset_fingerprint", "depth", "split_queries", "top", "preset")
        return {
            "file": self.source,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "criterion": CRITERION,
            **{k: self.provenance.get(k) for k in keep},
        }

    def check_model(self, identity: Mapping[str, Any]) -> None:
        """Heads belong to one set of weights: the name and, where both record it, the
        revision (a weights hash for embedded models) must match."""
        chosen = self.provenance.get("model") or {}
        for key in ("name", "revision"):
            mine, loaded = chosen.get(key), identity.get(key)
            if mine is not None and loaded is not None and mine != loaded:
                raise HarnessError(
                    f"{self.source}: heads were selected on model {key} {mine!r}, this preset "
                    f"loads {loaded!r}; select heads on this model"
                )

    def check_held_out(self, query_id: str) -> None:
        if query_id in set(self.provenance.get("split_query_ids") or ()):
            raise HarnessError(
                f"{self.source}: query {query_id!r} was in the head-selection split; evaluate "
                "on queries held out from selection (--queries N uses the first N)"
            )


def per_head_ndcg(
    head_scores: Sequence[np.ndarray],
    doc_ids: Sequence[Sequence[str]],
    query_ids: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
) -> np.ndarray:
    """Mean nDCG@10 [layers, heads] of the rankings each head's scores give.

    ``head_scores[k]``: [layers, heads, n] scores of set ``k``'s candidates (by index)."""
    from harness.metrics.effectiveness import effectiveness
    from harness.rerankers.base import ranking_from_scores

    rankings = []
    shape = head_scores[0].shape[:2]
    for scores, ids, qid in zip(head_scores, doc_ids, query_ids, strict=True):
        for layer in range(shape[0]):
            for head in range(shape[1]):
                rankings.append((qid, ranking_from_scores(ids, scores[layer, head].tolist())))
    values = effectiveness(qrels, rankings, ["ndcg@10"])["ndcg@10"]
    return values.reshape(len(head_scores), *shape).mean(axis=0)


def top_heads(ndcg: np.ndarray, top: int) -> tuple[tuple[int, int], ...]:
    """The ``top`` heads by nDCG, ties broken by (layer, head) so the result is stable."""
    if top < 1:
        raise HarnessError(f"--top must be at least 1, got {top}")
    layers, heads = ndcg.shape
    order = sorted(
        ((layer, head) for layer in range(layers) for head in range(heads)),
        key=lambda pair: (-ndcg[pair], pair),
    )
    return tuple(sorted(order[:top]))
