"""The dataset-format registry: a format from outside ``harness.data`` is one module plus one
entry point, with no edit to the registry, and loads by ``--dataset PATH`` and by a card.

The plugin below is real: a module and a ``*.dist-info`` with an ``entry_points.txt`` put on
``sys.path``, found by ``importlib.metadata`` as an installed distribution would be.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.config import RunConfig
from harness.data.fingerprint import dataset_fingerprint
from harness.data.formats import BUILTIN, ENTRY_POINT_GROUP, all_formats
from harness.data.model import Candidate, CandidateSet, TextQuery
from harness.data.registry import load_card, load_dataset, resolve_card
from harness.errors import HarnessError
from harness.runner import prepare_run

# A tiny format: one ``*.tiny`` file, one line per candidate in first-stage order,
# ``query id <TAB> query <TAB> doc id <TAB> doc text <TAB> grade``.
PLUGIN = """
from harness.data.formats import DataFormat
from harness.data.fingerprint import build_dataset
from harness.data.model import Candidate, CandidateSet, TextQuery
from harness.errors import DataFormatError


def load_tiny(path, *, name, max_docs=None):
    lists, queries, qrels = {}, {}, {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\\t")
        if len(parts) != 5:
            raise DataFormatError(path, f"expected 5 fields, got {len(parts)}", lineno)
        qid, query, doc_id, text, grade = parts
        queries[qid] = query
        lists.setdefault(qid, []).append((doc_id, text))
        qrels.setdefault(qid, {})[doc_id] = int(grade)
    sets = [
        CandidateSet(qid, TextQuery(queries[qid]), tuple(
            Candidate(doc_id, text, -float(rank))
            for rank, (doc_id, text) in enumerate(docs[:max_docs], start=1)
        ))
        for qid, docs in lists.items()
    ]
    return build_dataset(name=name, task="text-ranking", sets=sets, qrels=qrels,
                         source=f"tiny={path}", notes={"max_docs": max_docs})


def detect(folder):
    tiny = sorted(p.name for p in folder.iterdir() if p.suffix == ".tiny")
    return {"lists": tiny[0]} if len(tiny) == 1 else None


FORMAT = DataFormat(
    name="tiny",
    load=lambda r: load_tiny(r.files["lists"], name=r.name, **r.options),
    options=("max_docs",),
    files=("lists",),
    detect=detect,
    layout="one *.tiny file",
    label="tiny folder",
)
"""
LINES = "q1\tfleas\td1\tfleas bite\t2\nq1\tfleas\td2\tcats purr\t0\nq2\tcats\td2\tcats purr\t1\n"


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny format as an installed distribution: a module and its entry point."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "tiny_format.py").write_text(PLUGIN, encoding="utf-8")
    info = site / "tiny_format-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-format\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ntiny = tiny_format:FORMAT\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "tiny_format", raising=False)
    return site


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tinydata"
    folder.mkdir()
    (folder / "lists.tiny").write_text(LINES, encoding="utf-8")
    return folder


def expected_sets(max_docs: int | None = None) -> tuple[CandidateSet, ...]:
    q1 = (Candidate("d1", "fleas bite", -1.0), Candidate("d2", "cats purr", -2.0))[:max_docs]
    return (
        CandidateSet("q1", TextQuery("fleas"), q1),
        CandidateSet("q2", TextQuery("cats"), (Candidate("d2", "cats purr", -1.0),)),
    )


QRELS = {"q1": {"d1": 2, "d2": 0}, "q2": {"d2": 1}}


def test_a_plugin_folder_is_detected_by_path(plugin: Path, tiny_folder: Path) -> None:
    card = resolve_card(str(tiny_folder))
    assert dict(card.loader) == {
        "format": "tiny",
        "path": str(tiny_folder.resolve()),
        "lists": "lists.tiny",
    }
    assert card.description == f"tiny folder {tiny_folder}"
    assert card.status() == "available"
    dataset = load_dataset(card)
    assert tuple(dataset.sets) == expected_sets()
    assert dataset.qrels == QRELS
    assert dataset.name == "tinydata"
    assert dataset.fingerprint == dataset_fingerprint(expected_sets(), QRELS)


def test_a_plugin_format_is_named_by_a_card_with_its_options_checked(
    plugin: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    text = f"name: mine\nloader:\n  format: {{}}\n  path: {tiny_folder}\n  lists: lists.tiny\n"
    for name in ("tiny", "tiny_format:FORMAT"):  # the entry point, or the import path
        path = tmp_path / "card.yaml"
        path.write_text(text.format(name) + "  max_docs: 1\n")
        dataset = load_dataset(load_card(path))
        assert tuple(dataset.sets) == expected_sets(max_docs=1)
        assert dataset.notes == {"max_docs": 1}
        path.write_text(text.format(name) + "  max_doc: 1\n")
        with pytest.raises(HarnessError, match=r"unknown loader option\(s\) \['max_doc'\] for "
                           r"format 'tiny'; allowed: \['lists', 'max_docs', 'path'\]"):  # fmt: skip
            load_card(path)
    (tiny_folder / "lists.tiny").unlink()
    path.write_text(text.format("tiny"))
    assert (
        load_card(path).status()
        == f"missing: dataset 'mine': file not found: {tiny_folder}/lists.tiny"
    )


def test_a_run_prepares_from_a_plugin_folder(
    plugin: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    """``harness run --dataset PATH`` up to reranking (what the CLI calls)."""
    config = RunConfig(reranker="first-stage", dataset=str(tiny_folder), perms=2, out=str(tmp_path))
    prepared = prepare_run(config.validate())
    assert prepared.card.loader["format"] == "tiny"
    assert prepared.header.dataset.fingerprint == dataset_fingerprint(expected_sets(), QRELS)
    assert prepared.header.dataset.notes == {"max_docs": None}


def test_built_in_layouts_keep_precedence_over_plugins(plugin: Path, tmp_path: Path) -> None:
    def folder(*names: str) -> Path:
        path = tmp_path / "-".join(names).replace("/", "_")
        for name in names:
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_text("")
        return path

    beir = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")
    trec = ("run.trec", "topics.tsv", "corpus.jsonl", "qrels.txt")
    for names, fmt in (
        ((*beir, "a.tiny"), "beir"),
        (("a.json", "qrels.txt", "a.tiny"), "rankgpt-json"),
        ((*trec, "a.tiny"), "trec"),
        ((*trec, "a.json"), "rankgpt-json"),
        (("a.json", "b.json", *trec), "trec"),
        (("a.json", "b.json", "a.tiny"), "tiny"),
    ):
        assert resolve_card(str(folder(*names))).loader["format"] == fmt, names
    # a built-in layout with a doubtful qrels is an error, not left to a later format
    with pytest.raises(HarnessError, match=r"expected exactly one qrels\* file, found none$"):
        resolve_card(str(folder("a.json", "a.tiny")))
    with pytest.raises(HarnessError) as caught:
        resolve_card(str(folder("notes.txt")))
    message = str(caught.value)
    assert message.startswith(
        f"{tmp_path / 'notes.txt'}: cannot tell the layout; expected one of: beir ("
    )
    assert "\n" not in message and "; tiny (one *.tiny file)" in message


def test_broken_or_unknown_formats_are_one_line_errors(tmp_path: Path) -> None:
    card = tmp_path / "card.yaml"
    for name, fragment in (
        ("nope", "loader format must be one of ('beir', 'rankgpt-json', 'trec'"),
        ("no_such_module:FORMAT", "cannot load dataset format 'no_such_module:FORMAT'"),
        ("harness.data.trec:read_run", "'harness.data.trec:read_run' is not a DataFormat"),
    ):
        card.write_text(f"name: x\nloader:\n  format: {name}\n")
        with pytest.raises(HarnessError, match="^" + str(card).replace(".", r"\.")) as caught:
            load_card(card)
        assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_every_built_in_entry_is_its_module_format() -> None:
    formats = list(all_formats())
    assert [f.name for f in formats][: len(BUILTIN)] == list(BUILTIN)
    detecting = [f.name for f in formats if f.detect is not None]
    assert detecting[:3] == ["beir", "rankgpt-json", "trec"]  # --dataset PATH precedence
