"""Dataset cards are strictly typed: an option a format does not know is an error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.data.registry import load_card
from harness.errors import HarnessError

DL19_CARD = {
    "name": "dl19-copy",
    "task": "text-ranking",
    "loader": {
        "format": "rankgpt-json",
        "path": "../shared/data/msmarco-dl19",
        "run": "bm25_top100.rankgpt.json",
        "qrels": "qrels.txt",
    },
}


def _write(tmp_path: Path, card: dict) -> Path:
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


def _with(loader: dict | None = None, **fields) -> dict:
    return {**DL19_CARD, "loader": {**DL19_CARD["loader"], **(loader or {})}, **fields}


def test_a_valid_card_loads(tmp_path):
    card = load_card(_write(tmp_path, _with(defaults={"queries": 5})))
    assert card.name == "dl19-copy" and card.defaults == {"queries": 5}


@pytest.mark.parametrize(
    ("card", "fragment"),
    [
        (_with({"depth": 20}), "unknown loader option(s) ['depth'] for format 'rankgpt-json'"),
        (_with({"histroy_len": 5, "format": "movielens-100k"}), "'histroy_len'"),
        (_with(defaults={"queries": 5, "perms": 3}), "unknown default 'perms'"),
        (_with(defaults={"queries": "5"}), "default 'queries' must be an integer"),
        (_with(defaults={"depth": 0}), "default 'depth' must be at least 1"),
        (_with(defaults=[5]), "'defaults' must be a mapping"),
        (_with(descriptoin="typo"), "unknown card field(s) ['descriptoin']"),
    ],
)
def test_unknown_or_mistyped_card_settings_are_errors(tmp_path, card, fragment):
    with pytest.raises(HarnessError) as excinfo:
        load_card(_write(tmp_path, card))
    assert fragment in str(excinfo.value) and str(tmp_path / "card.yaml") in str(excinfo.value)


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=200, deadline=None)
@given(
    loader=st.dictionaries(st.text(max_size=12), _VALUES, max_size=4),
    defaults=st.one_of(_VALUES, st.dictionaries(st.text(max_size=8), _VALUES, max_size=3)),
)
def test_any_card_loads_or_is_one_harness_error(tmp_path_factory, loader, defaults):
    path = tmp_path_factory.mktemp("cards") / "card.yaml"
    path.write_text(yaml.safe_dump(_with(loader, defaults=defaults)))
    try:
        load_card(path)
    except HarnessError as exc:
        assert "\n" not in str(exc)
