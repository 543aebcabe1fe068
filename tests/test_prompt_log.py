"""--log-prompts: every model call's prompt and raw output, once per saved order, resumable."""

from __future__ import annotations

import json
from collections import Counter

import pytest

import harness
from harness.results.prompt_log import PROMPTS_FILE
from harness.results.store import SAMPLES_FILE


def _log(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / PROMPTS_FILE).read_text().splitlines()]


@pytest.mark.parametrize("reranker", ["rankgpt", "first", "invarirank"])
def test_each_call_logs_its_prompts_and_outputs(rankgpt_folder, tmp_path, reranker):
    out = tmp_path / reranker
    run = harness.evaluate(
        reranker, model="tiny-random-llama", dataset=str(rankgpt_folder), queries=2, depth=6,
        perms=3, batch_size=2, out=out, log_prompts=True,
    )  # fmt: skip
    lines = _log(out)
    logged = Counter(
        (line["query_id"], i) for line in lines if line["call"] == 0 for i in line["order_index"]
    )
    assert set(logged) == {(q, i) for q in ("q0", "q1") for i in range(4)}
    assert set(logged.values()) == {1}
    first = lines[0]
    # InvariRank's segments route packs candidate segments into rows (and passes) of their
    # own: look in every call of the first reranker call
    same_call = [
        prompt for line in lines if line["order_index"] == first["order_index"]
        and line["query_id"] == first["query_id"] for prompt in line["prompts"]
    ]  # fmt: skip
    assert "query number 0" in first["prompts"][0]
    assert "doc 1 of query 0" in "\n".join(same_call)
    assert len(first["outputs"]) >= 1
    samples = run.samples.set_index(["query_id", "order_index"])
    shown = samples.loc[("q0", 1), "shown"]
    row = next(line for line in lines if line["query_id"] == "q0" and 1 in line["order_index"])
    if reranker != "invarirank":  # a listwise prompt lists the docs in the shown order
        prompt = row["prompts"][row["order_index"].index(1)]
        positions = [prompt.index(f"doc {d.split('-d')[1].lstrip('0')} of query 0") for d in shown]
        assert positions == sorted(positions)


def test_the_log_is_off_by_default_and_changes_no_number(rankgpt_folder, tmp_path):
    settings = dict(model="tiny-random-llama", dataset=str(rankgpt_folder), queries=1, depth=5)
    plain = harness.evaluate("first", perms=2, out=tmp_path / "plain", **settings)
    logged = harness.evaluate("first", perms=2, out=tmp_path / "log", log_prompts=True, **settings)
    assert not (tmp_path / "plain" / PROMPTS_FILE).exists()
    assert plain.results.header.config_hash == logged.results.header.config_hash
    assert plain.per_query["ndcg@10"].equals(logged.per_query["ndcg@10"])


def test_a_resumed_run_logs_each_saved_order_once(rankgpt_folder, tmp_path):
    out = tmp_path / "run"
    settings = dict(
        model="tiny-random-llama", dataset=str(rankgpt_folder), queries=2, depth=5, perms=3,
        batch_size=2, out=out, log_prompts=True,
    )  # fmt: skip
    harness.evaluate("rankgpt", **settings)
    samples = (out / SAMPLES_FILE).read_text().splitlines()
    # an interruption after the log was written but before the last batch's samples were
    (out / SAMPLES_FILE).write_text("\n".join(samples[:-2]) + "\n")
    (out / "results.json").unlink()
    harness.evaluate("rankgpt", **settings)
    keys = Counter((line["query_id"], i) for line in _log(out) for i in line["order_index"])
    assert len(keys) == len(samples) and set(keys.values()) == {1}


def test_icr_logs_each_prefix_with_its_real_and_content_free_query(rankgpt_folder, tmp_path):
    """ICR reads attention, not text: its calls are logged (one prompt per order's prefix and
    query, the real one and ICR's "N/A"), not silently left out."""
    out = tmp_path / "icr"
    harness.evaluate(
        "icr", model="tiny-random-llama", dataset=str(rankgpt_folder), queries=1, depth=4,
        perms=1, batch_size=2, out=out, log_prompts=True,
    )  # fmt: skip
    lines = _log(out)
    assert lines and {line["kind"] for line in lines} == {"query_attention"}
    first = lines[0]
    assert len(first["prompts"]) == 2 * len(first["order_index"])  # real + content-free
    assert "query number 0" in first["prompts"][0] and "N/A" in first["prompts"][1]
    assert all("doc 1 of query 0" in prompt for prompt in first["prompts"])
    assert first["outputs"] == [None] * len(first["prompts"])
