"""Suite files: a fixed, versioned protocol (which data, which orders, which metrics) that anyone
can run on their reranker and compare on a leaderboard.

A suite is a YAML mapping (bundled ones live in the top-level ``suites/`` folder)::

    suite: order-smoke          # name
    version: 1                  # bump when the protocol changes
    description: ...
    metrics: [ndcg@10, kendall_tau, ...]   # what every task reports (registry names)
    primary: ndcg@10            # leaderboard order and neighbour significance
    aggregate: {confidence: 0.95, resamples: 2000, seed: 0}
    tasks:
      - name: ml100k-random
        dataset: movielens-100k # a card name, card file or data folder (relative: to this file)
        queries: 5              # count or selection, as --queries
        depth: 20
        seed: 0
        design: {strategy: random, perms: 6, repeats: 0}   # count / pin / templates as the run's
                                # adaptive: target: kendall_tau=0.02, min_perms: 3, perms the most
        metrics: [...]          # optional: replaces the suite's list for this task
        bring_your_own: true    # optional: data a user must obtain; skipped (and said) without it

Its identity is the SHA-256 of the validated content (not of the text, so comments and key order
do not count; a templates file counts by its content): two scorecards merge only when their
suites hash the same.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import RunConfig, check_seed
from harness.errors import HarnessError
from harness.presets import preset_dir, read_yaml

FORMAT = 1
_SUITE_FIELDS = ("suite", "version", "description", "metrics", "primary", "aggregate", "tasks")
_TASK_FIELDS = (
    "name", "dataset", "queries", "depth", "seed", "design", "metrics", "bring_your_own",
)  # fmt: skip
_DESIGN_FIELDS = (
    "strategy", "perms", "count", "pin", "templates", "repeats", "target", "min_perms",
)  # fmt: skip
_AGGREGATE_FIELDS = ("confidence", "resamples", "seed")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Aggregate:
    """How task and overall values are formed: per task the run's own mean over queries; overall
    the mean of the task means (each task weighs the same), with a stratified bootstrap interval
    (queries resampled within each task)."""

    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 0


@dataclass(frozen=True)
class SuiteTask:
    """One task: a dataset, its query selection and depth, an order design and its metrics."""

    name: str
    dataset: str
    queries: int | str | None
    depth: int | None
    seed: int
    design: Mapping[str, Any]
    metrics: tuple[str, ...]
    bring_your_own: bool = False
    templates_sha256: str | None = None
    location: str = ""  # the dataset as this machine finds it (a relative path resolved)

    def run_config(
        self, reranker: str, out: Path, *, device: str = "cpu", batch_size: int | None = None
    ) -> RunConfig:
        """The ordinary run this task is, for ``reranker`` in folder ``out``."""
        return RunConfig(
            reranker=reranker,
            dataset=self.location or self.dataset,
            queries=self.queries,
            depth=self.depth,
            seed=self.seed,
            out=str(out),
            device=device,
            batch_size=batch_size,
            **dict(self.design),
        ).validate()

    def data_status(self) -> str:
        """'available', or why the task's data is not on this machine."""
        from harness.data.registry import resolve_card

        try:
            card = resolve_card(self.location or self.dataset)
        except HarnessError as exc:
            return f"missing: {exc}"
        return card.status()

    def identity(self) -> dict[str, Any]:
        """What the suite hash covers of this task (the templates file by content)."""
        design = dict(self.design)
        if "templates" in design:
            design["templates"] = self.templates_sha256
        return {
            "name": self.name,
            "dataset": self.dataset,
            "queries": self.queries,
            "depth": self.depth,
            "seed": self.seed,
            "design": design,
            "metrics": list(self.metrics),
            "bring_your_own": self.bring_your_own,
        }


@dataclass(frozen=True)
class Suite:
    name: str
    version: int
    description: str
    metrics: tuple[str, ...]
    primary: str
    aggregate: Aggregate
    tasks: tuple[SuiteTask, ...]
    path: Path | None = field(default=None, compare=False)

    @property
    def sha256(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def identity(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "suite": self.name,
            "version": self.version,
            "metrics": list(self.metrics),
            "primary": self.primary,
            "aggregate": vars(self.aggregate),
            "tasks": [task.identity() for task in self.tasks],
        }

    def record(self) -> dict[str, Any]:
        """How scorecards name their suite: name, version and content hash."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    def label(self) -> str:
        return f"{self.name} v{self.version} ({self.sha256[:12]})"

    def task(self, name: str) -> SuiteTask:
        for task in self.tasks:
            if task.name == name:
                return task
        raise HarnessError(f"suite {self.name!r} has no task {name!r}")


def available_suites() -> list[Path]:
    return sorted(preset_dir("suites").glob("*.yaml"))


def resolve_suite(name_or_path: str | Path) -> Suite:
    """A bundled suite by name, or a suite file."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise HarnessError(f"suite file not found: {path}")
        return load_suite(path)
    bundled = preset_dir("suites") / f"{name_or_path}.yaml"
    if bundled.is_file():
        return load_suite(bundled)
    known = ", ".join(p.stem for p in available_suites())
    raise HarnessError(f"unknown suite {str(name_or_path)!r}; bundled suites: {known} (or a file)")


def load_suite(path: Path) -> Suite:
    """Read and validate a suite file; every problem is one line naming the file and field."""
    data = read_yaml(path)
    where = str(path)
    _no_unknown(data, _SUITE_FIELDS, where)
    name = data.get("suite")
    if not isinstance(name, str) or not _NAME.match(name):
        raise HarnessError(f"{where}: 'suite' must be a name (letters, digits, . _ -)")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise HarnessError(f"{where}: 'version' must be an integer >= 1, got {version!r}")
    metrics = _metrics(data.get("metrics"), f"{where}: metrics")
    primary = data.get("primary", metrics[0])
    if primary not in metrics:
        raise HarnessError(f"{where}: 'primary' {primary!r} must be one of the suite's metrics")
    from harness.metrics import registry

    spec = registry.get(primary)
    if spec.summary != "mean over queries" or not spec.has_direction:
        raise HarnessError(
            f"{where}: 'primary' {primary!r} must be a metric averaged over queries with a "
            "direction (it orders the leaderboard and is tested paired)"
        )
    aggregate = _aggregate(data.get("aggregate") or {}, f"{where}: aggregate")
    tasks_data = data.get("tasks")
    if not isinstance(tasks_data, list) or not tasks_data:
        raise HarnessError(f"{where}: 'tasks' must be a non-empty list")
    tasks = tuple(
        _task(item, metrics, path.parent, f"{where}: tasks[{k}]")
        for k, item in enumerate(tasks_data)
    )
    names = [t.name for t in tasks]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise HarnessError(f"{where}: task names must be unique, repeated: {doubled}")
    return Suite(
        name=name,
        version=version,
        description=str(data.get("description", "")).strip(),
        metrics=metrics,
        primary=primary,
        aggregate=aggregate,
        tasks=tasks,
        path=path,
    )


def _no_unknown(data: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise HarnessError(f"{where}: expected a mapping, got {data!r:.60}")
    unknown = sorted(set(map(str, data)) - set(allowed))
    if unknown:
        raise HarnessError(f"{where}: unknown field(s) {unknown}; allowed: {list(allowed)}")


def _metrics(value: Any, where: str) -> tuple[str, ...]:
    from harness.metrics import registry

    if not isinstance(value, list) or not value or not all(isinstance(m, str) for m in value):
        raise HarnessError(f"{where}: must be a non-empty list of metric names")
    known = {spec.name for spec in registry.summarized()}
    for metric in value:
        if metric not in known:
            raise HarnessError(
                f"{where}: unknown metric {metric!r}; known: {', '.join(sorted(known))}"
            )
    return tuple(dict.fromkeys(value))


def _aggregate(value: Any, where: str) -> Aggregate:
    _no_unknown(value, _AGGREGATE_FIELDS, where)
    aggregate = Aggregate(**value)
    if not isinstance(aggregate.confidence, float) or not 0 < aggregate.confidence < 1:
        raise HarnessError(f"{where}: confidence must be a number between 0 and 1")
    if (
        isinstance(aggregate.resamples, bool)
        or not isinstance(aggregate.resamples, int)
        or (aggregate.resamples < 1)
    ):
        raise HarnessError(f"{where}: resamples must be an integer >= 1")
    if not isinstance(aggregate.seed, int) or isinstance(aggregate.seed, bool):
        raise HarnessError(f"{where}: seed must be an integer")
    check_seed(aggregate.seed)
    return aggregate


def _task(item: Any, metrics: tuple[str, ...], base: Path, where: str) -> SuiteTask:
    _no_unknown(item, _TASK_FIELDS, where)
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise HarnessError(f"{where}: 'name' must be a name (letters, digits, . _ -)")
    where = f"{where} ({name})"
    dataset = item.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        raise HarnessError(f"{where}: 'dataset' must be a card name, card file or data folder")
    location = dataset  # as written it is hashed; a relative path is the suite file's
    if not dataset.startswith("irds:") and ("/" in dataset or dataset.startswith(".")):
        location = str((base / dataset).resolve())
    design = item.get("design") or {}
    _no_unknown(design, _DESIGN_FIELDS, f"{where}: design")
    templates_sha = None
    if "templates" in design:
        templates = Path(str(design["templates"]))
        templates = templates if templates.is_absolute() else (base / templates).resolve()
        if not templates.is_file():
            raise HarnessError(f"{where}: templates file not found: {templates}")
        design = {**design, "templates": str(templates)}
        templates_sha = hashlib.sha256(templates.read_bytes()).hexdigest()
    for key in ("queries", "depth", "seed"):
        value = item.get(key)
        if isinstance(value, bool) or (
            value is not None and not isinstance(value, int | str if key == "queries" else int)
        ):
            raise HarnessError(f"{where}: '{key}' must be an integer, got {value!r}")
    for key, value in design.items():
        wanted = str if key in ("strategy", "pin", "templates", "target") else int
        if isinstance(value, bool) or not isinstance(value, wanted):
            raise HarnessError(f"{where}: design '{key}' must be {wanted.__name__}, got {value!r}")
    bring = item.get("bring_your_own", False)
    if not isinstance(bring, bool):
        raise HarnessError(f"{where}: 'bring_your_own' must be true or false")
    task = SuiteTask(
        name=name,
        dataset=dataset,
        queries=item.get("queries"),
        depth=item.get("depth"),
        seed=item.get("seed", 0),
        design=design,
        metrics=_metrics(item["metrics"], f"{where}: metrics") if "metrics" in item else metrics,
        bring_your_own=bring,
        templates_sha256=templates_sha,
        location=location,
    )
    try:  # the run's own checks of the design, before any data is read
        task.run_config("first-stage", Path("unused"))
    except HarnessError as exc:
        raise HarnessError(f"{where}: {exc}") from None
    return task
