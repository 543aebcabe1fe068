"""Property tests: whatever a user types or a file holds, the answer is a result or one
HarnessError line, never a traceback (hypothesis generates the inputs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.config import merge_config
from harness.data.rankgpt_json import load_rankgpt_json
from harness.data.trec import read_corpus_jsonl, read_qrels, read_run, read_topics_tsv
from harness.errors import HarnessError
from harness.rerankers.registry import check_preset, load_preset

PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=6), SCALARS, max_size=3),
)


def _one_line(exc: HarnessError) -> None:
    assert str(exc) and "Traceback" not in str(exc)


@PROPERTY
@given(
    perms=st.one_of(st.none(), st.integers(min_value=-(2**65), max_value=2**65)),
    seed=st.one_of(st.none(), st.integers(min_value=-(2**65), max_value=2**65)),
    queries=st.one_of(st.none(), st.integers(min_value=-5, max_value=10**12)),
    depth=st.one_of(st.none(), st.integers(min_value=-5, max_value=10**12)),
    batch_size=st.one_of(st.none(), st.integers(min_value=-5, max_value=10**6)),
    strategy=st.one_of(st.none(), st.sampled_from(["random", "sweep", "shuffle", ""])),
    device=st.one_of(st.none(), st.sampled_from(["cpu", "cuda", "cuda:1", "gpu", "mps", ""])),
)
def test_cli_values_validate_or_are_one_line_errors(**values):
    try:
        config = merge_config(None, {"reranker": "identity", **values})
    except HarnessError as exc:
        _one_line(exc)
        return
    assert (config.batch_size is None or config.batch_size >= 1) and 0 <= config.seed < 2**63
    assert config.strategy != "random" or 1 <= config.perms <= 10_000


@PROPERTY
@given(data=st.dictionaries(st.text(max_size=12), VALUES, max_size=6))
def test_any_run_yaml_loads_or_is_one_line_error(tmp_path, data):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        merge_config(path, {"reranker": "identity"})
    except HarnessError as exc:
        _one_line(exc)


PRESET_KEYS = st.sampled_from(
    ["name", "adapter", "description", "order_invariant", "params", "backend", "nme"]
)


@PROPERTY
@given(
    data=st.dictionaries(PRESET_KEYS, VALUES, max_size=6),
    adapter=st.sampled_from(["identity", "first-stage", "pointwise", "invarirank", "rankgpt", "x"]),
    params=st.dictionaries(
        st.sampled_from(["model", "dtype", "max_history", "window_size", "step", "bogus"]),
        SCALARS,
        max_size=3,
    ),
)
def test_any_preset_loads_and_checks_or_is_one_line_error(tmp_path, data, adapter, params):
    path = tmp_path / "preset.yaml"
    preset = {"name": "p", "adapter": adapter, "params": params, **data}
    path.write_text(yaml.safe_dump(preset))
    try:
        check_preset(load_preset(path))
    except HarnessError as exc:
        _one_line(exc)


LINES = st.lists(
    st.one_of(
        st.text(max_size=30),
        st.builds(
            lambda q, d, g: f"{q} 0 {d} {g}",
            st.text(min_size=0, max_size=4),
            st.text(max_size=4),
            SCALARS,
        ),
    ),
    max_size=6,
)


@pytest.mark.parametrize("reader", [read_qrels, read_run, read_topics_tsv, read_corpus_jsonl])
@PROPERTY
@given(lines=LINES)
def test_text_loaders_parse_or_name_file_and_line(tmp_path, reader, lines):
    path = tmp_path / "file.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        reader(path)
    except HarnessError as exc:
        _one_line(exc)
        assert str(path) in str(exc)


@PROPERTY
@given(
    entries=st.one_of(
        VALUES,
        st.lists(
            st.dictionaries(
                st.sampled_from(["query", "hits", "qid", "docid", "content", "score", "rank"]),
                VALUES,
                max_size=4,
            ),
            max_size=3,
        ),
    )
)
def test_rankgpt_json_loads_or_names_the_file(tmp_path, entries):
    run = tmp_path / "run.json"
    run.write_text(json.dumps(entries, default=str))
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("q 0 d 1\n")
    try:
        load_rankgpt_json(run, qrels, name="t")
    except HarnessError as exc:
        _one_line(exc)
        assert str(run) in str(exc) or str(qrels) in str(exc)


def test_properties_cover_a_real_file_path(tmp_path):
    """The generated inputs above go through the same readers as real data folders."""
    path = Path(tmp_path / "qrels.txt")
    path.write_text("q1 0 d1 2\n")
    assert read_qrels(path) == {"q1": {"d1": 2}}
