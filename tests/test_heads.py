"""Head selection for ICR: parsing, per-head nDCG on a hand case, the artifact's round trip
and provenance checks, and `harness select-heads` end to end on a tiny random Llama."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from harness.errors import HarnessError
from harness.rerankers.methods.heads import HeadSelection, parse_heads, per_head_ndcg, top_heads

cli = CliRunner()


def test_heads_parse_from_layer_head_pairs() -> None:
    assert parse_heads("12:3, 14:0") == ((12, 3), (14, 0))
    for bad in ("12-3", "a:b", "1:2,", "1:2:3"):
        with pytest.raises(HarnessError, match="heads must be 'layer:head' pairs"):
            parse_heads(bad)
    with pytest.raises(HarnessError, match="lists a head twice"):
        parse_heads("1:2,1:2")


def test_per_head_ndcg_scores_each_head_alone() -> None:
    """Head (0, 0) puts the relevant doc first (nDCG 1); head (0, 1) last; head (1, 0) scores
    everything 0, so ties break by doc id ("a" first: the relevant one)."""
    scores = np.zeros((2, 2, 3))
    scores[0, 0] = [3.0, 2.0, 1.0]
    scores[0, 1] = [1.0, 2.0, 3.0]
    qrels = {"q": {"a": 1, "b": 0, "c": 0}}
    table = per_head_ndcg([scores], [("a", "b", "c")], ["q"], qrels)
    assert table[0, 0] == pytest.approx(1.0)
    assert table[0, 1] == pytest.approx(0.5)  # rank 3: 1 / log2(4)
    assert table[1, 0] == pytest.approx(1.0)
    assert top_heads(table, 2) == ((0, 0), (1, 0))  # ties by (layer, head)
    with pytest.raises(HarnessError, match="--top must be at least 1"):
        top_heads(table, 0)


def test_the_artifact_round_trips_and_guards_its_split(tmp_path: Path) -> None:
    table = np.array([[0.5, 0.25], [0.75, 0.0]])
    model = {"name": "m", "revision": "sha256:aa"}
    provenance = {"split_query_ids": ["q9"], "model": model, "dataset": "d"}
    path = tmp_path / "heads.json"
    HeadSelection(((1, 0), (0, 0)), table, provenance).save(path)
    loaded = HeadSelection.load(path)
    assert loaded.heads == ((1, 0), (0, 0)) and np.allclose(loaded.ndcg, table)
    assert json.loads(path.read_text())["deepest_layer"] == 1
    loaded.check_held_out("q1")
    with pytest.raises(HarnessError, match="query 'q9' was in the head-selection split"):
        loaded.check_held_out("q9")
    loaded.check_model({"name": "m", "revision": "sha256:aa"})
    loaded.check_model({"name": "m"})  # a backend that records no revision
    with pytest.raises(HarnessError, match="heads were selected on model name 'm'"):
        loaded.check_model({"name": "other"})
    with pytest.raises(HarnessError, match="model revision 'sha256:aa', this preset loads"):
        loaded.check_model({"name": "m", "revision": "sha256:bb"})
    path.write_text('{"format": "something-else"}')
    with pytest.raises(HarnessError, match="not a head selection"):
        HeadSelection.load(path)


# -- end to end on the tiny model -------------------------------------------------------------

pytest.importorskip("torch", reason="the llm extra (torch) is not installed")
pytest.importorskip("transformers", reason="the llm extra (transformers) is not installed")


def test_select_heads_writes_an_artifact_an_icr_preset_uses(
    rankgpt_folder: Path, tmp_path: Path
) -> None:
    from harness.cli import app
    from harness.rerankers.base import RunContext
    from harness.rerankers.registry import build_reranker, resolve_preset

    preset = tmp_path / "tiny-icr.yaml"
    preset.write_text("name: tiny-icr\nadapter: icr\nparams: {model: tiny-random-llama}\n")
    out = tmp_path / "heads.json"
    args = ["select-heads", "--reranker", str(preset), "--dataset", str(rankgpt_folder)]
    result = cli.invoke(app, [*args, "--split-queries", "2", "--top", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert len(data["heads"]) == 3
    assert np.asarray(data["ndcg_by_head"]).shape == (2, 4)
    provenance = data["provenance"]
    assert provenance["split_query_ids"] == ["q2", "q3"]  # the last two of q0..q3
    assert provenance["model"]["name"] == "tiny-random-llama"
    assert provenance["preset"]["name"] == "tiny-icr"

    selected = tmp_path / "tiny-icr-heads.yaml"
    selected.write_text(
        "name: tiny-icr-heads\nadapter: icr\n"
        f"params: {{model: tiny-random-llama, heads_file: {out}}}\n"
    )
    reranker = build_reranker(resolve_preset(str(selected)), RunContext())
    assert reranker.identity()["head_selection"]["split_queries"] == 2
    assert reranker.layers[-1] == data["deepest_layer"]
    from harness.data.registry import load_dataset, resolve_card

    sets = load_dataset(resolve_card(str(rankgpt_folder))).sets
    reranker.check_data(sets[0])
    with pytest.raises(HarnessError, match="was in the head-selection split"):
        reranker.check_data(sets[3])
    broken = cli.invoke(app, [*args, "--split-queries", "4", "--out", str(out)])
    assert broken.exit_code == 2 and "leaves no query" in broken.output
