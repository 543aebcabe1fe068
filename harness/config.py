"""The resolved configuration of a run: defaults < ``--config`` YAML < command-line flags."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.options import CONFIG_OPTIONS, DEFAULT_DATASET, OPTIONS
from harness.permutations import STRATEGIES
from harness.presets import read_yaml
from harness.validity import DEFAULT_MAX_INVALID_SHARE, check_max_invalid_share

MAX_ORDERS_PER_QUERY = 10_000
"""More random orders per query than any stability estimate needs; a typo such as ``--perms
1000000000`` would otherwise allocate until memory runs out."""
MAX_SEED = 2**63 - 1
"""Seeds are hashed with the query id into numpy's generator, which takes non-negative ints."""
_COUNTED = ("fixed", "sweep", "templates")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers (plus where to write them).

    ``queries``/``depth`` of ``None`` mean "the dataset card's default" (which may be all);
    ``queries`` is a count or a selection (``id1,id2``, ``@FILE``, ``random:K``, see
    :mod:`harness.data.query_selection`). ``model`` replaces the preset's model.
    ``relevance_level``: the grade from which binary metrics (MRR) count a candidate as
    relevant; ``None`` means the dataset card's (TREC DL cards: 2; others 1).
    ``target`` (``METRIC=HALF_WIDTH``) makes a random run adaptive: between ``min_perms`` and
    ``perms`` orders per query, as :mod:`harness.adaptive` decides.
    The fields are the ``run`` options of :data:`harness.options.RUN_OPTIONS`, with their
    types and defaults (``tests/test_options.py`` checks).
    """

    reranker: str | None = None
    dataset: str = DEFAULT_DATASET
    perms: int = 20
    strategy: str = "random"
    queries: int | str | None = None
    depth: int | None = None
    seed: int = 0
    out: str | None = None
    device: str = "cpu"
    batch_size: int | None = None  # unset: chosen per reranker (runner.auto_batch_size)
    count: int | None = None
    pin: str | None = None
    templates: str | None = None
    repeats: int = 0
    model: str | None = None
    relevance_level: int | None = None
    # how many orders may get invalid answers (harness.validity); bounds the run, changes no
    # number it computes, so it is not part of the configuration's identity (hash)
    max_invalid_share: float = DEFAULT_MAX_INVALID_SHARE
    target: str | None = None
    min_perms: int = 3
    # modules whose METRICS the run adds (comma-separated): computed from the samples, so
    # like max_invalid_share not part of the configuration's identity (hash)
    metrics_module: str | None = None

    def validate(self) -> RunConfig:
        if not self.reranker:
            raise HarnessError("no reranker given: pass --reranker NAME (see `harness list`)")
        if self.strategy not in STRATEGIES:
            raise HarnessError(f"unknown --strategy {self.strategy!r}; choose from {STRATEGIES}")
        if self.strategy == "random" and not 1 <= self.perms <= MAX_ORDERS_PER_QUERY:
            raise HarnessError(
                f"--perms must be between 1 and {MAX_ORDERS_PER_QUERY:,}, got {self.perms:,}"
            )
        check_seed(self.seed)
        if isinstance(self.queries, str):
            from harness.data.query_selection import QuerySelection

            QuerySelection.parse(self.queries)  # its syntax; ids are checked against the data
        for name in ("queries", "depth"):
            value = getattr(self, name)
            if isinstance(value, int) and value < 1:
                raise HarnessError(f"--{name} must be at least 1, got {value}")
        if self.count is not None:
            if self.strategy not in _COUNTED:
                raise HarnessError(
                    f"--count applies to the strategies {', '.join(_COUNTED)}, "
                    f"not {self.strategy!r}"
                )
            if not 1 <= self.count <= MAX_ORDERS_PER_QUERY:
                raise HarnessError(
                    f"--count must be between 1 and {MAX_ORDERS_PER_QUERY:,}, got {self.count:,}"
                )
        if self.pin is not None and self.strategy != "fixed":
            raise HarnessError("--pin applies only to --strategy fixed")
        if (self.templates is not None) != (self.strategy == "templates"):
            raise HarnessError(
                "--strategy templates needs --templates FILE"
                if self.templates is None
                else "--templates applies only to --strategy templates"
            )
        if not 0 <= self.repeats <= MAX_ORDERS_PER_QUERY:
            raise HarnessError(
                f"--repeats must be between 0 and {MAX_ORDERS_PER_QUERY:,}, got {self.repeats:,}"
            )
        if self.relevance_level is not None and self.relevance_level < 1:
            raise HarnessError(f"--relevance-level must be at least 1, got {self.relevance_level}")
        if self.batch_size is not None and self.batch_size < 1:
            raise HarnessError(f"--batch-size must be at least 1, got {self.batch_size}")
        check_max_invalid_share(self.max_invalid_share)
        if self.target is not None:
            if self.strategy != "random":
                raise HarnessError("--target (adaptive sampling) applies only to --strategy random")
            from harness.adaptive import Target

            Target.parse(self.target, min_perms=self.min_perms, max_perms=self.perms)
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise HarnessError(f"--device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_seed(seed: int) -> None:
    """One rule for every ``--seed`` (run, gate, calibration): checked before any work."""
    if not 0 <= seed <= MAX_SEED:
        raise HarnessError(f"--seed must be between 0 and 2**63 - 1, got {seed}")


def merge_config(config_path: Path | None, overrides: Mapping[str, Any]) -> RunConfig:
    """Defaults, then the YAML file (if any), then every flag the user actually gave."""
    config = RunConfig()
    if config_path is not None:
        data = {str(k).replace("-", "_"): v for k, v in read_yaml(config_path).items()}
        unknown = sorted(set(data) - {option.name for option in CONFIG_OPTIONS})
        if unknown:
            raise HarnessError(f"{config_path}: unknown run settings {unknown}")
        data = {key: OPTIONS[key].joined(value) for key, value in data.items()}
        for key, value in data.items():
            if value is not None:
                OPTIONS[key].check(value, f"{config_path}: ")
        # null is "not given", as an absent flag is: the default, not None
        config = replace(config, **{k: v for k, v in data.items() if v is not None})
    given = {k: v for k, v in overrides.items() if v is not None}
    config = replace(config, **given)
    if isinstance(config.queries, str) and config.queries.strip().isdigit():
        config = replace(config, queries=int(config.queries))  # --queries 5 is a count
    return replace(config, dataset=_normalized_dataset(config.dataset)).validate()


def _normalized_dataset(dataset: str) -> str:
    """``./data/`` and ``data`` are the same folder, so the same configuration: a path-like
    value is normalised (a card name or an ``irds:`` id is left as given)."""
    if dataset.startswith("irds:") or ("/" not in dataset and not dataset.startswith(".")):
        return dataset
    return os.path.normpath(dataset)


def config_hash(payload: Mapping[str, Any]) -> str:
    """Stable short hash of a JSON-able mapping (sorted keys)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
