"""The dataset-format registry: one :class:`DataFormat` per ``loader.format`` a card may name.

A format is one module holding its loader and a ``FORMAT = DataFormat(...)`` entry: the card
options it accepts, the files it reads, how a folder of its layout is detected, how its
availability is checked, and how it loads. The harness's own formats are listed in
:data:`BUILTIN` (one line each). A format from outside the package needs no edit here:

* a card may name it by import path, ``format: package.module:FORMAT``;
* a distribution that declares it as an entry point in the ``harness.dataset_formats`` group
  (``tiny = "package.module:FORMAT"``) makes ``format: tiny`` known to cards and adds its
  folder detection to ``--dataset PATH``, after the built-ins, which keep precedence.

Modules are imported when a format is needed, so importing this one imports none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.data.model import Dataset

# Name -> "module:attribute" of its DataFormat, in the order folders are detected.
BUILTIN: Mapping[str, str] = {
    "beir": "harness.data.beir:FORMAT",
    "rankgpt-json": "harness.data.rankgpt_json:FORMAT",
    "trec": "harness.data.trec:FORMAT",
    "movielens-100k": "harness.data.movielens:FORMAT",
    "ir-datasets": "harness.data.ir_datasets_loader:FORMAT",
    "recbole-seq": "harness.data.recbole_seq:FORMAT",
}
ENTRY_POINT_GROUP = "harness.dataset_formats"
# Keys every card's loader block may hold whatever its format: the format, and the data's
# folder for formats that read one.
FORMAT_KEY, PATH_KEY = "format", "path"


@dataclass(frozen=True)
class DataRequest:
    """A card's loader block as a format's hooks see it, already checked against the format."""

    name: str  # the dataset's name (the card's)
    loader: Mapping[str, Any]  # the whole block, for keys a format reads itself (id, split)
    folder: Path | None  # where ``path`` points, for formats that read a folder
    options: Mapping[str, Any]  # the block's keys among the format's ``options``
    files: Mapping[str, Path]  # what the format's ``locate`` found (empty before it ran)

    def data_folder(self) -> Path:
        """The folder a card's ``path`` names; only formats that read a folder ask."""
        assert self.folder is not None, "a format with folder=False has no data folder"
        return self.folder


@dataclass(frozen=True)
class DataFormat:
    """One dataset format: what a card may say about it, and the hooks that read it.

    Hooks get a :class:`DataRequest` and raise :class:`HarnessError` with one line naming
    what is wrong. ``locate`` runs before every load and for ``harness datasets``; ``check``
    only for ``harness datasets``, for a loader that fetches its data itself (so the listing
    must read nothing and touch no network).
    """

    name: str
    load: Callable[[DataRequest], Dataset]
    # Card keys handed to the loader as ``request.options``; a key in no tuple below is an
    # error, never ignored.
    options: tuple[str, ...] = ()
    # Card keys naming files in the folder; by default each must name an existing file.
    files: tuple[str, ...] = ()
    # Other card keys the format reads itself from ``request.loader`` (an id, a split).
    keys: tuple[str, ...] = ()
    folder: bool = True  # reads the folder a card's ``path`` names (default: the cwd)
    # The data's files, each checked to exist; default: the ``files`` keys in the folder.
    locate: Callable[[DataRequest], Mapping[str, Path]] | None = None
    check: Callable[[DataRequest], None] | None = None
    # A folder in this format's layout -> loader keys (besides format and path), else None;
    # raises for a folder that is of this layout but ambiguous.
    detect: Callable[[Path], Mapping[str, Any] | None] | None = None
    layout: str = ""  # the layout ``detect`` recognises, in words (for the no-match error)
    label: str = "data folder"  # a detected folder's card says "<label> <folder>"
    # ``--dataset <prefix><id>`` names data by id (the card's ``id`` key); ends with ":"
    prefix: str = ""

    def __post_init__(self) -> None:
        if self.prefix and not self.prefix.endswith(":"):
            raise ValueError(f"format {self.name!r}: prefix {self.prefix!r} must end with ':'")

    def allowed(self) -> list[str]:
        """The loader keys a card of this format may hold, besides ``format``, sorted."""
        location = (PATH_KEY,) if self.folder else ()
        return sorted({*location, *self.files, *self.keys, *self.options})

    def options_of(self, loader: Mapping[str, Any]) -> dict[str, Any]:
        """The loader options among a card's keys (what is not the data's location)."""
        return {key: value for key, value in loader.items() if key in self.options}

    def locate_files(self, request: DataRequest) -> Mapping[str, Path]:
        if self.locate is not None:
            return self.locate(request)
        return named_files(request, self.files)


def named_files(request: DataRequest, keys: tuple[str, ...]) -> dict[str, Path]:
    """The files a card names under ``keys``, in its folder; each must exist."""
    files = {}
    for key in keys:
        name = request.loader.get(key)
        if not isinstance(name, str):
            raise HarnessError(f"dataset {request.name!r}: loader needs a '{key}' file name")
        path = request.data_folder() / name
        if not path.is_file():
            raise HarnessError(f"dataset {request.name!r}: file not found: {path}")
        files[key] = path
    return files


def get_format(name: object, where: str) -> DataFormat:
    """The format a card's ``loader.format`` names: built-in, an entry point, or an import
    path ``package.module:NAME``; ``where`` (the card) leads the error for anything else."""
    if isinstance(name, str) and name in BUILTIN:
        return _import(BUILTIN[name], name, where)
    if isinstance(name, str) and ":" in name:
        return _import(name, None, where)
    plugins = _entry_points()
    if isinstance(name, str) and name in plugins:
        return _import(plugins[name], name, where)
    known = (*BUILTIN, *sorted(plugins))
    raise HarnessError(
        f"{where}: loader format must be one of {known} or 'package.module:NAME' of a "
        f"DataFormat, got {name!r}"
    )


def all_formats() -> Iterator[DataFormat]:
    """Built-ins in :data:`BUILTIN` order, then entry points by name: folder detection order."""
    for name, target in BUILTIN.items():
        yield _import(target, name, "built-in formats")
    for name, target in sorted(_entry_points().items()):
        yield _import(target, name, f"entry point {name!r} ({ENTRY_POINT_GROUP})")


def detect_format(folder: Path) -> tuple[DataFormat, Mapping[str, Any]]:
    """The first format whose layout ``folder`` has, with the loader keys it detected."""
    layouts = []
    for fmt in all_formats():
        if fmt.detect is None:
            continue
        found = fmt.detect(folder)
        if found is not None:
            return fmt, found
        layouts.append(f"{fmt.name} ({fmt.layout})")
    raise HarnessError(f"{folder}: cannot tell the layout; expected one of: {'; '.join(layouts)}")


def _entry_points() -> dict[str, str]:
    from importlib import metadata  # scans installed distributions: only when asked

    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _import(target: str, name: str | None, where: str) -> DataFormat:
    module_name, _, attr = target.partition(":")
    try:
        value = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise HarnessError(f"{where}: cannot load dataset format {target!r}: {exc}") from None
    if not isinstance(value, DataFormat):
        raise HarnessError(f"{where}: {target!r} is not a DataFormat")
    if name is not None and value.name != name:
        raise HarnessError(f"{where}: {target!r} is format {value.name!r}, not {name!r}")
    return value
