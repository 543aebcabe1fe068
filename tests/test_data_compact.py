"""Text-ranking sets are held compactly and read back as the loader used to build them; the
fingerprint, hashed one set at a time, is the one-shot canonical JSON's."""

from __future__ import annotations

import hashlib
import json

from harness.data.compact import (
    CompactSets,
    RankedRun,
    RunBuilder,
    set_query_ids,
    set_ranked_ids,
    take_sets,
    trim_sets,
)
from harness.data.fingerprint import _plain, _set_record, dataset_fingerprint
from harness.data.model import Candidate, CandidateSet, TextQuery
from harness.data.query_selection import QuerySelection
from harness.data.registry import select
from harness.data.trec import build_text_dataset, passage_text

RANKED = {
    "q1": [("d1", 3.0), ("d2", 2.5), ("d3", 1.0)],
    "q2": [("d3", 9.0), ("d4", 8.0)],
    "q3": [("d2", 1.0), ("d4", 0.5), ("d1", 0.25)],
}
QUERIES = {"q1": "first", "q2": "second", "q3": "third"}
DOCS = {"d1": ("Title", "body one"), "d2": ("", "body two"), "d3": ("T3", " b3 "), "d4": ("", "x")}
QRELS = {"q1": {"d1": 1}, "q2": {"d4": 2, "d9": 0}, "q3": {"d1": 1}}


def _eager() -> tuple[CandidateSet, ...]:
    """The sets as build_text_dataset built them before they were compact."""
    return tuple(
        CandidateSet(
            q,
            TextQuery(QUERIES[q]),
            tuple(Candidate(d, passage_text(*DOCS[d]), s, title=DOCS[d][0]) for d, s in RANKED[q]),
        )
        for q in RANKED
    )


def _one_shot_fingerprint(sets, qrels) -> str:
    """The fingerprint as it was computed before: the whole payload dumped at once."""
    payload = {
        "sets": [_set_record(s) for s in sets],
        "qrels": [[q, sorted([d, int(g)] for d, g in qrels[q].items())] for q in sorted(qrels)],
    }
    text = json.dumps(
        payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_plain
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def test_compact_sets_read_back_as_the_eager_sets():
    dataset = build_text_dataset(RANKED, QUERIES, DOCS, QRELS, name="t", source="s", notes={})
    assert isinstance(dataset.sets, CompactSets)
    assert dataset.sets == _eager() and list(dataset.sets) == list(_eager())
    assert dataset.fingerprint == _one_shot_fingerprint(_eager(), QRELS)
    assert dataset.sets[1:] == _eager()[1:] and isinstance(dataset.sets[1:], CompactSets)
    assert take_sets(dataset.sets, [2, 0]) == (_eager()[2], _eager()[0])
    trimmed = trim_sets(dataset.sets, 2)
    assert isinstance(trimmed, CompactSets) and [len(s) for s in trimmed] == [2, 2, 2]
    assert trimmed == trim_sets(_eager(), 2)
    assert set_query_ids(dataset.sets) == ["q1", "q2", "q3"]
    expected_ids = [(s.query_id, s.doc_ids) for s in _eager()]
    assert list(set_ranked_ids(dataset.sets)) == expected_ids  # without building sets
    assert list(set_ranked_ids(_eager())) == expected_ids
    assert list(set_ranked_ids(trimmed)) == [(q, ids[:2]) for q, ids in expected_ids]


def test_selection_and_depth_keep_sets_compact_and_equal():
    dataset = build_text_dataset(RANKED, QUERIES, DOCS, QRELS, name="t", source="s", notes={})
    chosen = QuerySelection.parse("q3,q1").apply(dataset, seed=0)
    assert isinstance(chosen.sets, CompactSets)
    assert [s.query_id for s in chosen.sets] == ["q1", "q3"]  # the dataset's order
    cut = select(chosen, queries=1, depth=1)
    first = _eager()[0]
    assert isinstance(cut.sets, CompactSets)
    assert cut.sets == (CandidateSet("q1", first.query, first.candidates[:1]),)


def test_streamed_fingerprint_equals_the_one_shot_hash_on_user_profiles_too():
    from harness.data.model import HistoryItem, UserProfile

    sets = [
        CandidateSet(
            "u1",
            UserProfile("u1", (HistoryItem("i1", "Film é", 4.0, {"g": ["a"]}),)),
            (Candidate("i2", "t", 0.5, fields={"year": 1999}),),
        ),
        *_eager(),
    ]
    assert dataset_fingerprint(sets, QRELS) == _one_shot_fingerprint(sets, QRELS)


def _ranked_run(ranked) -> RankedRun:
    """``ranked`` through the builder, rows interleaved across queries (q1 comes back)."""
    builder = RunBuilder()
    rows = [(q, d, s) for q, hits in ranked.items() for d, s in hits]
    for q, d, s in rows[::2] + rows[1::2]:
        assert builder.add(q, d, s)
    return builder.build()


class _NoLists(RankedRun):
    """A run whose lists cannot be built: whoever reads it must use its arrays."""

    def __getitem__(self, qid: str):
        raise AssertionError(f"built the list of {qid}")


def test_ranked_run_is_the_mapping_it_was_built_from():
    run = _ranked_run(RANKED)
    assert run == RANKED and list(run) == list(RANKED) and "q2" in run and "q9" not in run
    assert run.sizes() == {"q1": 3, "q2": 2, "q3": 3}
    assert run.doc_ids() == {"d1", "d2", "d3", "d4"}
    cut = run.cut(1)
    assert cut == {q: hits[:1] for q, hits in RANKED.items()} and run.cut(None) is run
    assert cut.doc_ids() == {"d1", "d3", "d2"}
    assert run == RANKED  # cutting left the run whole


def test_builder_rejects_a_doc_twice_in_a_query_even_after_reopening_it():
    builder = RunBuilder()
    assert builder.add("q1", "a", 1.0) and builder.add("q2", "a", 1.0)
    assert not builder.add("q1", "a", 2.0)
    assert builder.add("q1", "b", 2.0)
    assert builder.build() == {"q1": [("b", 2.0), ("a", 1.0)], "q2": [("a", 1.0)]}


def test_dataset_from_a_ranked_run_is_built_from_its_arrays_and_equals_the_dict_one():
    compact = _ranked_run(RANKED)
    run = _NoLists(compact.doc_table, {q: compact.arrays(q) for q in compact})
    dataset = build_text_dataset(run, QUERIES, DOCS, QRELS, name="t", source="s", notes={})
    expected = build_text_dataset(RANKED, QUERIES, DOCS, QRELS, name="t", source="s", notes={})
    assert dataset == expected and dataset.sets == _eager()
    assert dataset.fingerprint == expected.fingerprint == _one_shot_fingerprint(_eager(), QRELS)
