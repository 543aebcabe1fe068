"""--dry-run on an in-process model: passes and tokens as the real run records them, a time
estimate from a measured probe, and nothing written."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import harness
from harness.cli import app

TINY = dict(model="tiny-random-llama", queries=3, depth=5, perms=2, batch_size=2)


@pytest.mark.parametrize("reranker", ["invarirank", "first", "rankgpt"])
def test_counts_equal_the_real_runs_recorded_costs(rankgpt_folder, tmp_path, reranker):
    out = tmp_path / reranker
    counted = harness.dry_run(reranker, dataset=str(rankgpt_folder), out=out, **TINY)
    assert not out.exists()  # no run folder, no results
    run = harness.evaluate(reranker, dataset=str(rankgpt_folder), out=out, **TINY)
    samples = run.samples
    assert (counted.orders, counted.queries, counted.calls) == (len(samples), 3, 6) == (9, 3, 6)
    # rendered with the real tokenizer: equal to what the real run records, order by order
    assert counted.prompt_tokens == samples["prompt_tokens"].sum() > 0
    estimate = counted.estimate
    assert estimate.seconds > estimate.load_s > 0 and estimate.probe_s > 0
    assert (estimate.probe_calls, estimate.probe_orders) == (2, 3)
    assert "estimate" in estimate.basis and "per order" in estimate.basis
    if reranker == "rankgpt":  # the generated tokens beyond the probe are estimated
        assert estimate.answer_tokens is not None and counted.generated_tokens > 0
        assert counted.forward_passes == counted.generated_tokens
    else:  # nothing generated beyond FIRST's one token: passes are counted, not estimated
        assert estimate.answer_tokens is None
        assert counted.forward_passes == samples["forward_passes"].sum()
        assert counted.generated_tokens == samples["generated_tokens"].sum()


def test_cli_prints_the_estimate_with_its_basis_and_writes_nothing(rankgpt_folder, tmp_path):
    out = tmp_path / "run"
    args = ["run", "--reranker", "first", "--dataset", str(rankgpt_folder), "--out", str(out)]
    args += ["--dry-run"] + [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "dry run: 9 pending orders (3 queries, 6 reranker calls) of first on" in text
    assert "forward passes: 9 (1 per order" in text and "prompt tokens: " in text
    assert "time: ~" in text and "(estimate, measured here: model load" in text
    assert "nothing was written" in text and not out.exists()


def test_a_resumed_run_counts_only_its_pending_orders(rankgpt_folder, tmp_path):
    from harness.results.store import SAMPLES_FILE

    out = tmp_path / "run"
    settings = dict(dataset=str(rankgpt_folder), out=out, **TINY)
    recorded = harness.evaluate("first", **settings).samples["prompt_tokens"].tolist()
    lines = (out / SAMPLES_FILE).read_text().splitlines(keepends=True)
    (out / SAMPLES_FILE).write_text("".join(lines[:4]))  # interrupted after 4 orders
    (out / "results.json").unlink()
    counted = harness.dry_run("first", **settings)
    assert (counted.orders, counted.queries) == (5, 2)
    assert counted.prompt_tokens == sum(recorded[4:])
    assert (out / SAMPLES_FILE).read_text() == "".join(lines[:4])  # left as it was
