"""Samples stay on disk: the index a resume builds holds keys and offsets only, summaries read
one chunk of queries at a time, and neither depends on the order lines were written in."""

from __future__ import annotations

import json
import random
from pathlib import Path

from harness.config import RunConfig
from harness.results import summary as summary_module
from harness.results.store import SAMPLES_FILE, RunStore, SampleIndex, iter_samples
from harness.results.summary import summarize
from harness.runner import execute_run, prepare_run, rerank_pending


def _prepared(folder: Path, out: Path, reranker: str = "identity"):
    config = RunConfig(reranker=reranker, dataset=str(folder), perms=5, out=str(out), repeats=2)
    return prepare_run(config.validate())


COMPUTED = ("summary", "per_query", "per_order", "position_bias", "noise_floor", "counts")


def _computed(results) -> str:
    """What is computed from the samples, as comparable text (NaN == NaN)."""
    data = results.to_dict()
    return json.dumps({k: data.get(k) for k in COMPUTED}, sort_keys=True)


def test_summaries_from_disk_in_chunks_equal_summaries_in_memory(
    rankgpt_folder, tmp_path, monkeypatch
):
    prepared = _prepared(rankgpt_folder, tmp_path / "run")
    execute_run(prepared)
    in_memory = {s.key: s for s in iter_samples(prepared.run_dir)}
    sets, qrels = prepared.dataset.sets, prepared.dataset.qrels
    expected = summarize(sets, qrels, in_memory, seed=0)

    monkeypatch.setattr(summary_module, "QUERIES_PER_CHUNK", 1)
    index = RunStore(prepared.run_dir).scan_samples()
    assert isinstance(index, SampleIndex) and len(index) == len(in_memory)
    assert json.dumps(summarize(sets, qrels, index, seed=0), sort_keys=True) == json.dumps(
        expected, sort_keys=True
    )


def test_results_do_not_depend_on_the_order_samples_were_written(rankgpt_folder, tmp_path):
    prepared = _prepared(rankgpt_folder, tmp_path / "run")
    first = execute_run(prepared)
    path = prepared.run_dir / SAMPLES_FILE
    lines = path.read_text().splitlines(keepends=True)
    random.Random(0).shuffle(lines)
    path.write_text("".join(lines))
    again = execute_run(prepared)  # nothing pending: resumes and recomputes from disk
    assert _computed(again) == _computed(first)


def test_a_key_written_twice_counts_once_with_its_last_line(rankgpt_folder, tmp_path):
    prepared = _prepared(rankgpt_folder, tmp_path / "run")
    execute_run(prepared)
    path = prepared.run_dir / SAMPLES_FILE
    first = json.loads(path.read_text().splitlines()[0])
    rerun = dict(first, facts={**first["facts"], "latency_ms": 123.0})
    with path.open("a") as handle:
        handle.write(json.dumps(rerun) + "\n")
    index = RunStore(prepared.run_dir).scan_samples()
    assert len(index) == prepared.total_orders
    key = (first["query_id"], first["order_index"])
    (sample,) = [s for s in index.query_samples(key[0]) if s.key == key]
    assert sample.facts["latency_ms"] == 123.0
    # every other reader (reports, exports, the Python API) sees what the metrics see
    streamed = [s for s in iter_samples(prepared.run_dir) if s.key == key]
    assert [s.facts["latency_ms"] for s in streamed] == [123.0]
    assert sum(1 for _ in iter_samples(prepared.run_dir)) == prepared.total_orders


def test_a_resume_indexes_the_samples_instead_of_loading_them(rankgpt_folder, tmp_path):
    prepared = _prepared(rankgpt_folder, tmp_path / "run")
    execute_run(prepared)
    reranked = rerank_pending(prepared)
    assert isinstance(reranked.samples, SampleIndex)
    assert len(reranked.samples) == prepared.total_orders
    assert ("q0", 0) in reranked.samples and ("q0", 10_000) not in reranked.samples


def test_readers_index_keys_from_each_line_head_and_parse_each_line_once(
    rankgpt_folder, tmp_path, monkeypatch
):
    """``iter_samples`` takes each line's key from its first bytes (as ``Sample.to_json``
    writes them) and parses the line once, when its query is read; a line written with
    other key order or spacing is parsed to find its key; a corrupt line is one line."""
    import pytest

    from harness.errors import HarnessError
    from harness.results import store

    prepared = _prepared(rankgpt_folder, tmp_path / "run")
    execute_run(prepared)
    path = prepared.run_dir / SAMPLES_FILE
    index = RunStore(prepared.run_dir).scan_samples()
    expected = [s for q in index.query_ids() for s in index.query_samples(q)]
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = json.dumps(dict(reversed(json.loads(lines[3]).items()))) + "\n"  # other writer
    path.write_text("".join(lines))
    parsed = []
    real = store.Sample.from_dict
    monkeypatch.setattr(store.Sample, "from_dict", lambda data: parsed.append(1) or real(data))
    assert list(iter_samples(prepared.run_dir)) == expected
    assert len(parsed) == len(lines) + 1  # every line once, the reordered one twice
    lines[5] = lines[5][:60] + "#corrupt\n"
    path.write_text("".join(lines))
    with pytest.raises(HarnessError, match=r"samples\.jsonl.*corrupt sample record") as error:
        list(iter_samples(prepared.run_dir))
    assert "\n" not in str(error.value)
