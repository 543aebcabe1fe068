"""Samples stay on disk: the index a resume builds holds keys and offsets only, summaries read
one chunk of queries at a time, and neither depends on the order lines were written in."""

from __future__ import annotations

import json
import random
from pathlib import Path

from harness.config import RunConfig
from harness.files import dumps_json
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

    def text(sections):  # per_order rows are PerOrder records
        return dumps_json(sections, default=lambda orders: orders.to_dict())

    assert text(summarize(sets, qrels, index, seed=0)) == text(expected)


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


def _eager_units(prepared, done=None):
    """The units as the runner built them before plans were built lazily: every plan up
    front, then each query's scheduled pending rows cut into batches."""
    from harness.runner import _pending_rows, _schedule

    units = []
    for cset in prepared.dataset.sets:
        plan = prepared.plan(cset)
        rows = _schedule(plan, _pending_rows(plan, done))
        units += [(cset, plan, rows[s : s + 4]) for s in range(0, len(rows), 4)]
    return units


def _same_units(lazy, eager) -> bool:
    return len(lazy) == len(eager) and all(
        a[0] is b[0] and a[2] == b[2] and (a[1].orders == b[1].orders).all()
        and a[1].labels == b[1].labels
        for a, b in zip(lazy, eager, strict=True)
    )  # fmt: skip


def test_pending_units_build_each_plan_when_asked_and_equal_the_eager_units(
    rankgpt_folder, tmp_path, monkeypatch
):
    import harness.prepare as prepare_module
    import harness.runner as runner_module
    from harness.permutations import PermutationPlan

    prepared = _prepared(rankgpt_folder, tmp_path / "run")
    held = [v for v in vars(prepared).values() for v in (v if isinstance(v, tuple) else (v,))]
    assert not any(isinstance(v, PermutationPlan) for v in held)  # no plan is kept
    built = []
    real = prepare_module.plan_permutations
    monkeypatch.setattr(
        prepare_module, "plan_permutations", lambda *a, **k: built.append(a[1]) or real(*a, **k)
    )
    units = runner_module.PendingUnits(prepared, None)
    queries = [cset.query_id for cset in prepared.dataset.sets]
    assert built == queries  # counted and scheduled one query at a time, none kept
    built.clear()
    lazy = [units[i] for i in range(len(units))]
    assert built == queries  # in dispatch order each query's plan is built once
    assert _same_units(lazy, _eager_units(prepared))
    assert units.orders == prepared.total_orders


def test_pending_units_keep_their_rows_while_samples_are_saved(rankgpt_folder, tmp_path):
    from harness.runner import PendingUnits

    prepared = _prepared(rankgpt_folder, tmp_path / "run")
    execute_run(prepared)
    path = prepared.run_dir / SAMPLES_FILE
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[::3]))  # a third done: the rest pending
    done = RunStore(prepared.run_dir).scan_samples()
    units = PendingUnits(prepared, done)
    expected = _eager_units(prepared, done)
    store = RunStore(prepared.run_dir)
    store.index = done
    store.append([s for s in iter_samples(prepared.run_dir)][:5])  # saved meanwhile
    store.close()
    assert _same_units(units, expected)
    assert len(units) == len(expected) and units[-1][2] == expected[-1][2]


def test_results_json_is_streamed_to_the_same_bytes_and_a_failure_leaves_no_file(tmp_path):
    import pytest

    from harness.results.store import RunStore

    payload = {"a": [1, 2.5, float("nan"), {"b": None, "c": "é"}], "p": Path("/x"), "e": {}}
    path = RunStore(tmp_path).write_json("results.json", payload)
    assert path.read_text(encoding="utf-8") == json.dumps(payload, indent=2, default=str) + "\n"
    with pytest.raises((ValueError, RecursionError)):  # fails midway: the old file stays
        bad: dict = {"x": 1}
        bad["self"] = bad
        RunStore(tmp_path).write_json("results.json", bad)
    assert path.read_text(encoding="utf-8").startswith('{\n  "a"')
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
