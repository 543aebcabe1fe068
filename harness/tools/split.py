"""The held-out split a tool calibrates or selects on: the LAST queries of a dataset, since a
run's ``--queries N`` evaluates the first N."""

from __future__ import annotations

import dataclasses

from harness.data.model import Dataset
from harness.errors import HarnessError


def probe_split(dataset: Dataset, probe_queries: int, depth: int | None) -> Dataset:
    """The held-out probe split: the LAST ``probe_queries`` sets (``--queries N`` evaluates the
    first N), cut to ``depth``."""
    if probe_queries < 1:
        raise HarnessError(f"--probe-queries must be at least 1, got {probe_queries}")
    if probe_queries >= len(dataset.sets):
        raise HarnessError(
            f"--probe-queries {probe_queries} leaves no query of the {len(dataset.sets)} for "
            "evaluation; probe on fewer"
        )
    sets = dataset.sets[-probe_queries:]
    if depth is not None:
        sets = tuple(dataclasses.replace(s, candidates=s.candidates[:depth]) for s in sets)
    return dataclasses.replace(dataset, sets=tuple(sets))
