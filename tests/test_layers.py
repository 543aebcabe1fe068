"""The package's floors: a module imports only from its own floor or a lower one, and no two
modules import each other, directly or round a longer circle.

Every ``import`` counts, wherever it is written: at module level, inside a function (a lazy
import is still a dependency, only a later one) and under ``if TYPE_CHECKING:`` (a type-only
import still means the lower module knows the higher one, and mypy follows it). The one module
left out is the package root ``harness`` (``harness/__init__.py``): importing any submodule runs
it anyway, and it holds only ``__version__`` and a lazy facade over the public API.

The floors follow the pipeline, lowest first. Metrics sit low although they run late: they are
pure functions over numbers, and results and reports call them, never the other way round.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "harness"

# Lowest first. A module belongs to the floor of its longest matching prefix.
FLOORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "foundation",
        (
            "harness.errors",
            "harness.files",
            "harness.progress",
            "harness.presets",
            "harness.validity",
            "harness.aggregation",
            "harness.usage",
        ),
    ),
    ("data and measures", ("harness.data", "harness.models", "harness.metrics")),
    (
        "run design",
        (
            "harness.permutations",
            "harness.adaptive",
            "harness.options",
            "harness.config",
            "harness.context",
        ),
    ),
    ("backends", ("harness.backends",)),
    # rerankers/: the interface, presets, params and prompts, then the methods and debiasers
    # built on them, then the registry that knows them all
    ("method parts", ("harness.rerankers",)),
    (
        "methods",
        ("harness.rerankers.methods", "harness.rerankers.debiasers", "harness.rerankers.toolkits"),
    ),
    ("method registry", ("harness.rerankers.registry", "harness.rerankers.model_override")),
    ("results", ("harness.results",)),
    ("running", ("harness.executors", "harness.prepare", "harness.runner", "harness.adaptive_run")),
    ("reading", ("harness.report", "harness.gates", "harness.suites")),
    ("tools", ("harness.tools",)),
    (
        "interface",
        (
            "harness.api",
            "harness.cli",
            "harness.cli_support",
            "harness.__main__",
            "harness.suites.cli",
        ),
    ),
)

# Edges that break the rule today, each with why it is allowed. Keep this empty.
ALLOWED: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            here = module.split(".")
            if path.name != "__init__.py":
                here.pop()
            here = here[: len(here) - (node.level - 1)]
            base = ".".join(here + ([node.module] if node.module else []))
        # ``from harness.x import y``: y is a module when such a module exists
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    for name in names:
        while name not in MODULES and "." in name:
            name = name.rsplit(".", 1)[0]  # an object inside a module counts as the module
        if name in MODULES and name != module:
            yield name


def _edges() -> set[tuple[str, str]]:
    edges = set()
    for module, path in MODULES.items():
        if module == "harness":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges.update((module, t) for t in _targets(module, path, node) if t != "harness")
    return edges


EDGES = _edges()


def floor_of(module: str) -> int:
    best, floor = -1, -1
    for level, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, floor = len(prefix), level
    return floor


def test_every_module_has_a_floor():
    """A new package must say where it stands."""
    assert [m for m in MODULES if m != "harness" and floor_of(m) < 0] == []


def test_no_import_runs_up_a_floor():
    upward = sorted(
        f"{a} ({FLOORS[floor_of(a)][0]}) imports {b} ({FLOORS[floor_of(b)][0]})"
        for a, b in EDGES
        if floor_of(b) > floor_of(a) and (a, b) not in ALLOWED
    )
    assert upward == []


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    graph: dict[str, list[str]] = {m: [] for m in MODULES}
    for a, b in sorted(edges):
        graph[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle():
    assert _cycles({e for e in EDGES if e not in ALLOWED}) == []


def test_every_allowed_edge_still_exists():
    """An exception whose import is gone is deleted, so the list only shrinks."""
    assert sorted(set(ALLOWED) - EDGES) == []


def test_the_checks_can_fail():
    """The graph is read, and a planted upward edge and circle are caught."""
    assert ("harness.runner", "harness.results.store") in EDGES
    assert floor_of("harness.backends.base") < floor_of("harness.rerankers.base")
    assert floor_of("harness.rerankers.prompts.templates") < floor_of("harness.rerankers.methods")
    assert floor_of("harness.suites.cli") > floor_of("harness.suites.run")
    planted = {("harness.errors", "harness.files"), ("harness.files", "harness.errors")}
    assert _cycles(planted) == [["harness.errors", "harness.files"]]
