"""Resolve ``--dataset NAME|PATH`` to a loaded :class:`Dataset`.

NAME is a dataset card under the top-level ``datasets/`` folder (source, license, how to
obtain, and a ``loader`` block whose ``format`` picks a :class:`~harness.data.formats.DataFormat`).
PATH is a card file, or a folder whose layout a format detects (the built-ins first, in
:data:`harness.data.formats.BUILTIN` order, then those of plugins):

* BEIR: ``corpus.jsonl``, ``queries.jsonl`` and a ``qrels/`` folder (split ``test``, or the
  only one); candidates from the folder's one ``*.trec``/``*.run`` file, else from BM25;
* rank_llm / RankGPT JSON: one ``*.json`` candidate file + ``qrels*`` (TREC qrels);
* TREC: a run (``*.trec`` or ``run*``), ``topics.tsv``, ``corpus.jsonl``, ``qrels*``.

``irds:<id>`` names an ir_datasets dataset (e.g. ``irds:beir/scifact/test``). A card's loader
keys are checked against its format; an unknown one is an error, not ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.data.compact import CompactSets, trim_sets
from harness.data.formats import (
    FORMAT_KEY,
    PATH_KEY,
    DataFormat,
    DataRequest,
    all_formats,
    detect_format,
    get_format,
)
from harness.data.model import Dataset
from harness.errors import HarnessError
from harness.presets import preset_dir, read_yaml


@dataclass(frozen=True)
class DatasetCard:
    name: str
    task: str
    description: str
    source: str
    license: str
    how_to_obtain: str
    loader: Mapping[str, Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    card_path: Path | None = None
    reproduces: str = ""  # the published protocol this card follows, where it follows one
    # The grade from which binary metrics (MRR) count a document as relevant, as the
    # collection's own evaluation does (TREC DL passage tasks: 2, trec_eval -l 2).
    relevance_level: int = 1

    def status(self) -> str:
        """'available', or why it is not (checked without loading the data)."""
        try:
            fmt = card_format(self)
            request = _located(self, fmt)
            if fmt.check is not None:
                fmt.check(request)
        except HarnessError as exc:
            return f"missing: {exc}"
        return "available"


def available_cards() -> list[DatasetCard]:
    return [load_card(path) for path in sorted(preset_dir("datasets").glob("*.yaml"))]


def load_card(path: Path) -> DatasetCard:
    data = read_yaml(path)
    loader = data.get("loader")
    if not isinstance(data.get("name"), str) or not isinstance(loader, dict):
        raise HarnessError(f"{path}: a dataset card needs 'name' and a 'loader' mapping")
    unknown = sorted(set(data) - set(_CARD_FIELDS))
    if unknown:
        raise HarnessError(
            f"{path}: unknown card field(s) {unknown}; allowed: {list(_CARD_FIELDS)}"
        )
    card = DatasetCard(
        name=data["name"],
        task=str(data.get("task", "text-ranking")),
        description=str(data.get("description", "")).strip(),
        source=str(data.get("source", "")).strip(),
        license=str(data.get("license", "")).strip(),
        how_to_obtain=str(data.get("how_to_obtain", "")).strip(),
        loader=loader,
        defaults=data.get("defaults") or {},
        card_path=path,
        reproduces=str(data.get("reproduces", "")).strip(),
        relevance_level=_relevance_level(data.get("relevance_level", 1), path),
    )
    check_card(card)
    return card


def _relevance_level(value: Any, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HarnessError(f"{path}: 'relevance_level' must be an integer >= 1, got {value!r}")
    return value


def resolve_card(name_or_path: str) -> DatasetCard:
    """A bundled card by name, a card file, or a data folder or an id (``irds:<id>``)
    described on the fly."""
    for fmt in all_formats() if ":" in name_or_path else ():  # prefixes end with ':'
        if fmt.prefix and name_or_path.startswith(fmt.prefix) and name_or_path != fmt.prefix:
            data_id = name_or_path[len(fmt.prefix) :]
            return _card(
                name_or_path, f"{fmt.label} {data_id}", {FORMAT_KEY: fmt.name, "id": data_id}
            )
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} and path.is_file():
        return load_card(path)
    if path.is_dir():
        return _card_for_folder(path)
    bundled = preset_dir("datasets") / f"{name_or_path}.yaml"
    if bundled.is_file():
        return load_card(bundled)
    if "/" in name_or_path or name_or_path.startswith("."):
        raise HarnessError(f"dataset path not found: {name_or_path}")
    known = ", ".join(card.name for card in available_cards())
    raise HarnessError(f"unknown dataset {name_or_path!r}; known datasets: {known} (or a path)")


def load_dataset(card: DatasetCard) -> Dataset:
    """Load the data a card describes: its format locates the files, then its loader reads
    and validates them."""
    fmt = card_format(card)
    return fmt.load(_located(card, fmt))


def card_format(card: DatasetCard) -> DataFormat:
    """The format a card's loader block names (an error naming the card for no such format)."""
    return get_format(card.loader.get(FORMAT_KEY), _where(card))


def _where(card: DatasetCard) -> str:
    return str(card.card_path) if card.card_path is not None else f"dataset {card.name!r}"


def select(dataset: Dataset, *, queries: int | None, depth: int | None) -> Dataset:
    """Keep the first ``queries`` sets (in the dataset's order) and the top ``depth`` of each."""
    sets = dataset.sets[:queries] if queries is not None else dataset.sets
    if depth is not None:
        sets = trim_sets(sets, depth)
    return replace(dataset, sets=sets if isinstance(sets, CompactSets) else tuple(sets))


_CARD_FIELDS = (
    "name", "task", "description", "source", "license", "how_to_obtain", "loader", "defaults",
    "reproduces", "relevance_level",
)  # fmt: skip
_DEFAULTS = ("queries", "depth")


def check_card(card: DatasetCard) -> None:
    """HarnessError for any loader key the format does not know and any bad ``defaults``:
    a misspelled or misplaced option must not be silently ignored."""
    where = _where(card)
    fmt = card_format(card)
    allowed = fmt.allowed()
    unknown = sorted(set(card.loader) - {FORMAT_KEY, *allowed})
    if unknown:
        raise HarnessError(
            f"{where}: unknown loader option(s) {unknown} for format {fmt.name!r}; "
            f"allowed: {allowed}"
        )
    if not isinstance(card.defaults, Mapping):
        raise HarnessError(f"{where}: 'defaults' must be a mapping of {list(_DEFAULTS)}")
    for key, value in card.defaults.items():
        if key not in _DEFAULTS:
            raise HarnessError(f"{where}: unknown default {key!r}; allowed: {list(_DEFAULTS)}")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise HarnessError(f"{where}: default {key!r} must be an integer, got {value!r}")
        if value is not None and value < 1:
            raise HarnessError(f"{where}: default {key!r} must be at least 1, got {value}")


def _located(card: DatasetCard, fmt: DataFormat) -> DataRequest:
    """The request a format's hooks get for ``card``, its files located (each checked)."""
    request = DataRequest(
        name=card.name,
        loader=card.loader,
        folder=_resolve_folder(card) if fmt.folder else None,
        options=fmt.options_of(card.loader),
        files={},
    )
    return replace(request, files=fmt.locate_files(request))


def _resolve_folder(card: DatasetCard) -> Path:
    """A card's ``path`` is relative to the working directory, else to the project checkout."""
    raw = Path(str(card.loader.get(PATH_KEY, ".")))
    candidates = [raw] if raw.is_absolute() else [Path.cwd() / raw]
    if card.card_path is not None and not raw.is_absolute():
        candidates.append(card.card_path.resolve().parent.parent / raw)
    for folder in candidates:
        if folder.is_dir():
            return folder
    hint = f" ({card.how_to_obtain})" if card.how_to_obtain else ""
    raise HarnessError(f"dataset {card.name!r}: folder not found: {candidates[0]}{hint}")


def _card_for_folder(folder: Path) -> DatasetCard:
    fmt, detected = detect_format(folder)
    loader = {FORMAT_KEY: fmt.name, PATH_KEY: str(folder.resolve()), **detected}
    return _card(folder.resolve().name, f"{fmt.label} {folder}", loader)


def _card(name: str, description: str, loader: dict[str, Any]) -> DatasetCard:
    """A card made on the fly for a folder or an ``irds:`` id (text ranking)."""
    return DatasetCard(
        name=name,
        task="text-ranking",
        description=description,
        source=str(loader.get(PATH_KEY) or loader.get("id")),
        license="",
        how_to_obtain="",
        loader=loader,
    )
