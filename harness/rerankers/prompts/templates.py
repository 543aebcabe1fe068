"""Prompt templates as data: load, validate and pick the YAML files under ``templates/``.

A template file names its ``kind`` (which reranker family renders it: ``marker`` for
InvariRank/lft, ``numbered`` for RankGPT/FIRST, ``pointwise``, ``attention`` for ICR, ``titles``
for LLMRank, recommendation only), its ``task``
(``recommendation`` or ``text-ranking``) and the strings of that kind; an optional ``context``
mapping says how a query, a history and a candidate become text
(:class:`~harness.rerankers.prompts.base.ContextFormat`). ``reproduces`` and ``differs`` document
what published prompt it follows and where it departs from it.

A preset picks a template with the ``prompt_template`` param: a bundled name or a path to a
YAML file. The chosen template replaces the default of its task; the other task keeps its
default. Every placeholder is checked against those its part may use, and every error is one
line naming the file and line.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from harness.data.model import QueryContext, UserProfile
from harness.errors import HarnessError
from harness.presets import preset_dir
from harness.rerankers.prompts.base import (
    FIELD_NAMES,
    HISTORY_ORDERS,
    MARKERS,
    AttentionTemplate,
    ContextFormat,
    ListwiseTemplate,
    PointwiseTemplate,
)
from harness.rerankers.prompts.listwise import NumberedTemplate
from harness.rerankers.prompts.normalize import NORMALIZERS, POINTS, Normalization
from harness.rerankers.prompts.titles import LIST_STYLES, TitlesTemplate

Template = (
    ListwiseTemplate | NumberedTemplate | PointwiseTemplate | AttentionTemplate | TitlesTemplate
)
TASKS = ("recommendation", "text-ranking")
KINDS: dict[str, type] = {
    "marker": ListwiseTemplate,
    "numbered": NumberedTemplate,
    "pointwise": PointwiseTemplate,
    "attention": AttentionTemplate,
    "titles": TitlesTemplate,
}
DEFAULTS: dict[str, dict[str, str]] = {
    "marker": {
        "recommendation": "invarirank-recommendation-v1",
        "text-ranking": "invarirank-text-v1",
    },
    "numbered": {
        "recommendation": "numbered-recommendation-v1",
        "text-ranking": "numbered-text-v1",
    },
    "pointwise": {
        "recommendation": "pointwise-recommendation-v1",
        "text-ranking": "pointwise-text-v1",
    },
    "attention": {
        "recommendation": "icr-recommendation-v1",
        "text-ranking": "icr-text-v1",
    },
    "titles": {"recommendation": "llmrank-games-reference"},  # lists a history: no text task
}
DOC_KEYS = ("description", "reproduces", "differs")
_ITEM_FIELDS = {"title", "text", "number", *FIELD_NAMES}
# The placeholders each part may use (the context's parts are checked the same way).
PLACEHOLDERS: dict[str, dict[str, set[str]]] = {
    "marker": {
        "instruction": set(),
        "span": {"instruction", "context"},
        "item": {"text"},
        "separator": set(),
    },
    "numbered": {
        "system": set(),
        "head": {"context", "count"},
        "item": {"label", "text"},
        "tail": {"count", "example", "query"},
        "head_reply": set(),
        "item_reply": {"label"},
    },
    "pointwise": {"prefix": {"context"}, "suffix": {"text"}, "yes": set(), "no": set()},
    "attention": {"opening": set(), "closing": set(), "query": {"query"}, "separator": set()},
    "titles": {
        "system": set(),
        "head": {"history", "count"},
        "history_entry": {"index", "number", "title"},
        "candidate_entry": {"index", "number", "title"},
        "tail": {"count"},
        "lists": set(),
    },
}
CONTEXT_PLACEHOLDERS: dict[str, set[str]] = {
    "query": {"query"},
    "history_line": _ITEM_FIELDS,
    "history_header": set(),
    "empty_history": set(),
    "candidate": _ITEM_FIELDS,
}
REQUIRED: dict[str, set[str]] = {
    "item": {"text"},
    "span": {"context"},
    "prefix": {"context"},
    "query": {"query"},
}


@dataclass(frozen=True)
class TemplateFile:
    """A loaded template and what its file says about it."""

    template: Template
    kind: str
    task: str
    source: str
    description: str = ""
    reproduces: str = ""
    differs: str = ""


@dataclass(frozen=True)
class TemplateChoice:
    """The template a reranker renders for each task."""

    by_task: Mapping[str, Template]

    def for_query(self, query: QueryContext) -> Any:
        task = "recommendation" if isinstance(query, UserProfile) else "text-ranking"
        if task not in self.by_task:
            names = ", ".join(t.name for t in self.by_task.values())
            raise HarnessError(f"this reranker's prompt ({names}) has no {task} template")
        return self.by_task[task]

    def hashes(self) -> dict[str, str]:
        """``{template name: sha256}`` for provenance, in task order."""
        return {
            self.by_task[task].name: self.by_task[task].sha256()
            for task in TASKS
            if task in self.by_task
        }


def templates_dir() -> Path:
    """The bundled templates folder."""
    return preset_dir("templates")


def available_templates() -> list[TemplateFile]:
    """Every bundled template, sorted by file name."""
    return [load_template_file(path) for path in sorted(templates_dir().glob("*.yaml"))]


def resolve_template(name_or_path: str) -> TemplateFile:
    """A bundled template by name, or a template file by path."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise HarnessError(f"prompt template file not found: {path}")
        return load_template_file(path)
    bundled = templates_dir() / f"{name_or_path}.yaml"
    if not bundled.is_file():
        known = ", ".join(sorted(p.stem for p in templates_dir().glob("*.yaml")))
        raise HarnessError(f"unknown prompt template {name_or_path!r}; known templates: {known}")
    return load_template_file(bundled)


def choose_templates(kind: str, chosen: str | None = None) -> TemplateChoice:
    """The defaults of ``kind`` for both tasks, the ``chosen`` template (name or path) in place
    of its task's default."""
    by_task = {task: resolve_template(name).template for task, name in DEFAULTS[kind].items()}
    if chosen:
        loaded = resolve_template(chosen)
        check_kind(loaded, kind)
        by_task[loaded.task] = loaded.template
    return TemplateChoice(by_task)


def check_kind(loaded: TemplateFile, kind: str) -> None:
    if loaded.kind != kind:
        raise HarnessError(
            f"{loaded.source}: template {loaded.template.name!r} is a {loaded.kind} template; "
            f"this reranker renders {kind} templates"
        )


def load_template_file(path: Path) -> TemplateFile:
    """Read and validate one template file."""
    data, lines = _read(path)

    def where(*keys: str) -> str:
        return f"{path}:{lines.get(keys, lines.get(keys[:1], 1))}"

    kind = data.get("kind")
    if kind not in KINDS:
        raise HarnessError(f"{where('kind')}: 'kind' must be one of {', '.join(KINDS)}")
    task = data.get("task")
    if task not in TASKS:
        raise HarnessError(f"{where('task')}: 'task' must be one of {', '.join(TASKS)}")
    cls = KINDS[kind]
    parts = {f.name for f in fields(cls)} - {"name", "context"}
    has_context = any(f.name == "context" for f in fields(cls))
    allowed = {"name", "kind", "task", *DOC_KEYS, *parts} | ({"context"} if has_context else set())
    for key in data:
        if key not in allowed:
            raise HarnessError(
                f"{where(key)}: unknown template key {key!r} for kind {kind}; allowed: "
                f"{', '.join(sorted(allowed))}"
            )
    if not isinstance(data.get("name"), str) or not data["name"].strip():
        raise HarnessError(f"{where('name')}: a template needs a non-empty string 'name'")
    for key in DOC_KEYS:
        if not isinstance(data.get(key, ""), str):
            raise HarnessError(f"{where(key)}: {key!r} must be a string")
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in ("name", "context") or f.name not in data:
            continue
        value = data[f.name]
        if f.name == "replace_numbers":
            if not isinstance(value, bool):
                raise HarnessError(f"{where(f.name)}: 'replace_numbers' must be true or false")
        elif f.name == "normalize":
            value = _normalization(value, where)
        else:
            _check_text(value, PLACEHOLDERS[kind][f.name], f.name, where(f.name))
        values[f.name] = value
    missing = sorted(p for p in parts if p not in values and _required_part(cls, p))
    if missing:
        raise HarnessError(f"{path}: a {kind} template needs {', '.join(map(repr, missing))}")
    if has_context:
        values["context"] = _context(data.get("context"), kind, where)
    template = cls(name=data["name"], **values)
    _check_layout(template, where)
    _check_titles(template, task, where)
    return TemplateFile(
        template=template,
        kind=kind,
        task=task,
        source=str(path),
        **{key: str(data.get(key, "")).strip() for key in DOC_KEYS},
    )


def _normalization(raw: Any, where: Any) -> Normalization:
    """``normalize``: a mapping of ``candidates`` and ``prompt`` to a normaliser."""
    if not isinstance(raw, dict):
        raise HarnessError(
            f"{where('normalize')}: 'normalize' must map {' and '.join(POINTS)} to one of "
            f"{', '.join(NORMALIZERS)}"
        )
    for key, how in raw.items():
        at = where("normalize", str(key))
        if key not in POINTS:
            raise HarnessError(
                f"{at}: unknown normalize point {key!r}; points: {', '.join(POINTS)}"
            )
        if how not in NORMALIZERS:
            raise HarnessError(
                f"{at}: normalize.{key} must be one of {', '.join(NORMALIZERS)}, got {how!r}"
            )
    return Normalization(**raw)


def _required_part(cls: type, name: str) -> bool:
    f = next(f for f in fields(cls) if f.name == name)
    return f.default is MISSING and f.default_factory is MISSING


def _context(raw: Any, kind: str, where: Any) -> ContextFormat:
    # Numbered and attention templates write the query themselves ("Query: {query}").
    base = ContextFormat(query="{query}") if kind in ("numbered", "attention") else ContextFormat()
    if raw is None:
        return base
    if not isinstance(raw, dict):
        raise HarnessError(f"{where('context')}: 'context' must be a mapping")
    known = {f.name for f in fields(ContextFormat)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        at = where("context", key)
        if key not in known:
            raise HarnessError(
                f"{at}: unknown context key {key!r}; allowed: {', '.join(sorted(known))}"
            )
        if key == "history_order":
            if value not in HISTORY_ORDERS:
                raise HarnessError(
                    f"{at}: history_order must be one of {', '.join(HISTORY_ORDERS)}"
                )
        elif key == "fields":
            if not isinstance(value, dict):
                raise HarnessError(f"{at}: 'fields' must map {', '.join(FIELD_NAMES)} to text")
            for name, fragment in value.items():
                if name not in FIELD_NAMES:
                    raise HarnessError(
                        f"{where('context', key, name)}: unknown field {name!r}; fields: "
                        f"{', '.join(FIELD_NAMES)}"
                    )
                _check_text(fragment, {"value"}, f"fields.{name}", where("context", key, name))
            value = dict(value)
        else:
            _check_text(value, CONTEXT_PLACEHOLDERS[key], f"context.{key}", at)
        values[key] = value
    return ContextFormat(**{**{f.name: getattr(base, f.name) for f in fields(base)}, **values})


def _check_text(value: Any, allowed: set[str], part: str, at: str) -> None:
    """A string whose ``{placeholders}`` are all allowed (and the required ones present)."""
    if not isinstance(value, str):
        raise HarnessError(f"{at}: {part!r} must be a string")
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise HarnessError(f"{at}: {part!r} is not a valid format string ({exc})") from exc
    unknown = sorted(used - allowed)
    if unknown:
        names = ", ".join("{" + n + "}" for n in sorted(allowed)) or "none"
        raise HarnessError(
            f"{at}: {part!r} uses unknown placeholder {{{unknown[0]}}}; it may use {names} "
            "(write {{ and }} for literal braces)"
        )
    need = REQUIRED.get(part, set()) - used
    if need:
        raise HarnessError(f"{at}: {part!r} must contain {{{sorted(need)[0]}}}")


def _check_layout(template: Template, where: Any) -> None:
    """Marker templates must keep the segment markers where the reranker looks for them."""
    if not isinstance(template, ListwiseTemplate):
        return
    span, span_end, item, item_end = MARKERS
    if not (template.span.startswith(span) and template.span.endswith(span_end)):
        raise HarnessError(
            f"{where('span')}: 'span' must start with {span} and end with {span_end}"
        )
    if not (template.item.startswith(item) and template.item.endswith(item_end)):
        raise HarnessError(
            f"{where('item')}: 'item' must start with {item} and end with {item_end}"
        )


def _check_titles(template: Template, task: str, where: Any) -> None:
    """A titles template lists a user's history, in a list style the renderer knows."""
    if not isinstance(template, TitlesTemplate):
        return
    if task != "recommendation":
        raise HarnessError(
            f"{where('task')}: a titles template lists a user's history; its task must be "
            "recommendation"
        )
    if template.lists not in LIST_STYLES:
        raise HarnessError(f"{where('lists')}: 'lists' must be one of {', '.join(LIST_STYLES)}")


def _read(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """The file's mapping and the line of each key path (for error messages)."""
    import yaml

    from harness.presets import read_yaml

    data = read_yaml(path)
    lines: dict[tuple[str, ...], int] = {}
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:  # read_yaml already parsed it; composing cannot fail differently
        node = None
    _key_lines(node, (), lines)
    return data, lines


def _key_lines(node: Any, prefix: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        return
    for key, value in node.value:
        path = (*prefix, str(key.value))
        out[path] = key.start_mark.line + 1
        _key_lines(value, path, out)
