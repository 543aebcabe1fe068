"""Resolve ``--dataset NAME|PATH`` to a loaded :class:`Dataset`.

NAME is a dataset card under the top-level ``datasets/`` folder (source, license, how to
obtain, and a ``loader`` block). PATH is a card file, or a folder in one of the layouts
below, detected by the files it holds:

* BEIR: ``corpus.jsonl``, ``queries.jsonl`` and a ``qrels/`` folder (split ``test``, or the
  only one); candidates from the folder's one ``*.trec``/``*.run`` file, else from BM25;
* rank_llm / RankGPT JSON: one ``*.json`` candidate file + ``qrels*`` (TREC qrels);
* TREC: a run (``*.trec`` or ``run*``), ``topics.tsv``, ``corpus.jsonl``, ``qrels*``.

``irds:<id>`` names an ir_datasets dataset (e.g. ``irds:beir/scifact/test``). Formats whose
cards take options list them in ``_OPTIONS``; an unknown option is an error, not ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.data.compact import CompactSets, trim_sets
from harness.data.model import Dataset
from harness.errors import HarnessError
from harness.presets import preset_dir, read_yaml

FORMATS = ("movielens-100k", "rankgpt-json", "trec", "beir", "ir-datasets", "recbole-seq")


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
            _check_available(self)
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
    if loader.get("format") not in FORMATS:
        raise HarnessError(f"{path}: loader format must be one of {FORMATS}")
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
    """A bundled card by name, a card file, or a data folder described on the fly."""
    from harness.data.ir_datasets_loader import with_prefix

    irds_id = with_prefix(name_or_path)
    if irds_id is not None:
        return _card(
            name_or_path, f"ir_datasets {irds_id}", {"format": "ir-datasets", "id": irds_id}
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
    """Load the data a card describes; every loader validates its own files."""
    loader = dict(card.loader)
    fmt = loader.pop("format")
    if fmt == "movielens-100k":
        from harness.data.movielens import load_movielens_100k

        return load_movielens_100k(name=card.name, **_options(card))
    if fmt == "ir-datasets":
        from harness.data.ir_datasets_loader import load_ir_dataset

        return load_ir_dataset(str(loader.get("id", "")), name=card.name, **_options(card))
    # Any: mypy checks a ** mapping's values against every keyword of the loader
    files: dict[str, Any] = dict(_check_available(card))
    if fmt == "beir":
        from harness.data.beir import load_beir

        return load_beir(**files, name=card.name, **_options(card))
    if fmt == "recbole-seq":
        from harness.data.recbole_seq import load_recbole_seq

        return load_recbole_seq(**files, name=card.name, **_options(card))
    if fmt == "rankgpt-json":
        from harness.data.rankgpt_json import load_rankgpt_json

        return load_rankgpt_json(files["run"], files["qrels"], name=card.name)
    from harness.data.trec import load_trec_dataset

    return load_trec_dataset(
        files["run"], files["topics"], files["corpus"], files["qrels"], name=card.name
    )


def select(dataset: Dataset, *, queries: int | None, depth: int | None) -> Dataset:
    """Keep the first ``queries`` sets (in the dataset's order) and the top ``depth`` of each."""
    sets = dataset.sets[:queries] if queries is not None else dataset.sets
    if depth is not None:
        sets = trim_sets(sets, depth)
    return replace(dataset, sets=sets if isinstance(sets, CompactSets) else tuple(sets))


_FILE_KEYS = {
    "rankgpt-json": ("run", "qrels"),
    "trec": ("run", "topics", "corpus", "qrels"),
    "recbole-seq": ("inter", "item", "candidates"),
}
# Card keys passed to the loader as options (files, path, split and id are handled here).
# Every format is listed: a key a format does not know is an error, never silently ignored.
_OPTIONS: dict[str, tuple[str, ...]] = {
    "movielens-100k": ("history_len", "test_size", "num_candidates", "data_dir"),
    "rankgpt-json": (),
    "trec": (),
    "beir": ("depth", "k1", "b", "cache_dir"),
    "ir-datasets": ("first_stage", "depth", "k1", "b", "cache_dir", "probe_timeout"),
    "recbole-seq": (
        "history_len",
        "num_candidates",
        "insert_target",
        "seed",
        "drop_missing_target",
    ),
}
# Keys handled by the registry itself, per format (the data's location and its files).
_LOCATION_KEYS: dict[str, tuple[str, ...]] = {
    "movielens-100k": (),
    "rankgpt-json": ("path", *_FILE_KEYS["rankgpt-json"]),
    "trec": ("path", *_FILE_KEYS["trec"]),
    "beir": ("path", "split", "run"),
    "ir-datasets": ("id",),
    "recbole-seq": ("path", *_FILE_KEYS["recbole-seq"]),
}
_CARD_FIELDS = (
    "name", "task", "description", "source", "license", "how_to_obtain", "loader", "defaults",
    "reproduces", "relevance_level",
)  # fmt: skip
_DEFAULTS = ("queries", "depth")


def _options(card: DatasetCard) -> dict[str, Any]:
    """The card's loader options (what is not the data's location)."""
    fmt = card.loader["format"]
    skip = {"format", *_LOCATION_KEYS[fmt]}
    return {k: v for k, v in card.loader.items() if k not in skip}


def check_card(card: DatasetCard) -> None:
    """HarnessError for any loader key the format does not know and any bad ``defaults``:
    a misspelled or misplaced option must not be silently ignored."""
    fmt = card.loader["format"]
    where = str(card.card_path) if card.card_path is not None else f"dataset {card.name!r}"
    allowed = sorted({*_LOCATION_KEYS[fmt], *_OPTIONS[fmt]})
    unknown = sorted(set(card.loader) - {"format", *allowed})
    if unknown:
        raise HarnessError(
            f"{where}: unknown loader option(s) {unknown} for format {fmt!r}; allowed: {allowed}"
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


def _check_available(card: DatasetCard) -> dict[str, Path]:
    fmt = card.loader["format"]
    if fmt == "movielens-100k":
        from harness.data.movielens import movielens_files

        movielens_files()  # raises with the install command when recbole is absent
        return {}
    if fmt == "ir-datasets":
        from harness.data.ir_datasets_loader import check_ir_dataset

        check_ir_dataset(str(card.loader.get("id")), card.loader.get("first_stage", "auto"))
        return {}
    folder = _resolve_folder(card)
    if fmt == "beir":
        from harness.data.beir import beir_files

        return beir_files(folder, card.loader)
    files = {}
    for key in _FILE_KEYS[fmt]:
        name = card.loader.get(key)
        if not isinstance(name, str):
            raise HarnessError(f"dataset {card.name!r}: loader needs a '{key}' file name")
        path = folder / name
        if not path.is_file():
            raise HarnessError(f"dataset {card.name!r}: file not found: {path}")
        files[key] = path
    return files


def _resolve_folder(card: DatasetCard) -> Path:
    """A card's ``path`` is relative to the working directory, else to the project checkout."""
    raw = Path(str(card.loader.get("path", ".")))
    candidates = [raw] if raw.is_absolute() else [Path.cwd() / raw]
    if card.card_path is not None and not raw.is_absolute():
        candidates.append(card.card_path.resolve().parent.parent / raw)
    for folder in candidates:
        if folder.is_dir():
            return folder
    hint = f" ({card.how_to_obtain})" if card.how_to_obtain else ""
    raise HarnessError(f"dataset {card.name!r}: folder not found: {candidates[0]}{hint}")


def _card_for_folder(folder: Path) -> DatasetCard:
    from harness.data.beir import folder_run, is_beir_folder

    if is_beir_folder(folder):
        loader = {"format": "beir", "path": str(folder.resolve()), "run": folder_run(folder)}
        return _card(folder.resolve().name, f"BEIR folder {folder}", loader)
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    qrels = [n for n in names if n.startswith("qrels")]
    jsons = [n for n in names if n.endswith(".json")]
    runs = [n for n in names if n.endswith((".trec", ".run")) or n.startswith("run")]
    if len(qrels) != 1:
        raise HarnessError(f"{folder}: expected exactly one qrels* file, found {qrels or 'none'}")
    if len(jsons) == 1:
        loader = {"format": "rankgpt-json", "run": jsons[0]}
    elif len(runs) == 1 and "topics.tsv" in names and "corpus.jsonl" in names:
        loader = {
            "format": "trec",
            "run": runs[0],
            "topics": "topics.tsv",
            "corpus": "corpus.jsonl",
        }
    else:
        raise HarnessError(
            f"{folder}: cannot tell the layout; expected one *.json candidate file + qrels, "
            "or a run (*.trec) + topics.tsv + corpus.jsonl + qrels"
        )
    loader.update(path=str(folder.resolve()), qrels=qrels[0])
    return _card(folder.resolve().name, f"data folder {folder}", loader)


def _card(name: str, description: str, loader: dict[str, Any]) -> DatasetCard:
    """A card made on the fly for a folder or an ``irds:`` id (text ranking)."""
    return DatasetCard(
        name=name,
        task="text-ranking",
        description=description,
        source=str(loader.get("path") or loader.get("id")),
        license="",
        how_to_obtain="",
        loader=loader,
    )
