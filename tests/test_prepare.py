"""prepare_run's steps, each alone: which queries, which notes, which resolved config and hash."""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.config import RunConfig
from harness.data.registry import load_dataset, resolve_card
from harness.errors import HarnessError
from harness.prepare import (
    check_sets,
    choose_queries,
    identity_hash,
    named_preset,
    plan_lengths,
    prepare_run,
    resolved_config,
    size_notes,
    with_batch_size,
)


def _loaded(folder, **settings):
    config = RunConfig(reranker="identity", dataset=str(folder), **settings).validate()
    card = resolve_card(config.dataset)
    return config, card, load_dataset(card)


def test_choose_queries_takes_a_count_ids_or_the_cards_default(rankgpt_folder):
    config, card, full = _loaded(rankgpt_folder, queries=2, depth=5)
    chosen = choose_queries(config, card, full)
    assert [s.query_id for s in chosen.dataset.sets] == ["q0", "q1"]
    assert {len(s.doc_ids) for s in chosen.dataset.sets} == {5}
    assert (chosen.queries, chosen.depth, chosen.selection) == (2, 5, None)
    config, card, full = _loaded(rankgpt_folder, queries="q3,q1")
    chosen = choose_queries(config, card, full)
    assert sorted(s.query_id for s in chosen.dataset.sets) == ["q1", "q3"]
    assert chosen.queries is None and chosen.selection is not None


def test_size_notes_say_what_asked_for_more_than_there_is(rankgpt_folder):
    config, card, full = _loaded(rankgpt_folder, queries=9, depth=50)
    notes = size_notes(config, full, choose_queries(config, card, full))
    assert notes == [
        "--depth 50 exceeds the longest list (12); full lists are used",
        "--queries 9 exceeds the 4 available; all are used",
    ]


def test_check_sets_refuses_an_unjudged_query(rankgpt_folder):
    _config, card, full = _loaded(rankgpt_folder)
    check_sets(card, full, full)  # all judged: nothing raised
    qrels = dict(full.qrels) | {"q2": {}}
    with pytest.raises(HarnessError, match="'q2' has no relevant judgment"):
        check_sets(card, full, replace(full, qrels=qrels))
    with pytest.raises(HarnessError, match="no candidate sets"):
        check_sets(card, full, replace(full, sets=()))


def test_the_hash_is_of_what_is_computed_not_of_the_bookkeeping(rankgpt_folder):
    config, card, full = _loaded(rankgpt_folder, strategy="sweep", max_invalid_share=0.5)
    chosen = choose_queries(config, card, full)
    preset = named_preset(config)
    config = with_batch_size(config, preset, plan_lengths(chosen.dataset, config, None, (), 1))
    resolved = resolved_config(config, chosen, level=1)
    assert resolved["perms"] is None  # only random draws use it
    digest = identity_hash(resolved, preset, full.fingerprint)
    assert identity_hash(resolved | {"max_invalid_share": 0.9}, preset, full.fingerprint) == digest
    assert identity_hash(resolved | {"seed": 1}, preset, full.fingerprint) != digest
    assert identity_hash(resolved, preset, "another") != digest
    assert digest == prepare_run(replace(config, batch_size=None)).header.config_hash


def test_an_unset_batch_size_is_resolved_and_a_set_one_kept(rankgpt_folder):
    config, _card, full = _loaded(rankgpt_folder, perms=7)
    lengths = plan_lengths(full, config, None, (), level=1)
    assert len(lengths) == 4 and sum(lengths) == prepare_run(config).total_orders
    preset = named_preset(config)
    assert with_batch_size(config, preset, lengths).batch_size is not None
    assert with_batch_size(replace(config, batch_size=3), preset, lengths).batch_size == 3
