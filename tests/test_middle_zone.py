"""The report's middle-zone view: zones split as documented, a list whose middle scores are
identical has zero middle spread, and runs without scores are left out."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from harness.permutations import OrderLabel
from harness.report.middle_zone import middle_zone, plot_middle_zone, zone_bounds
from harness.results.schema import QueryRecord
from harness.results.store import Sample


def fake_run(scored: bool, invariant: bool = False) -> SimpleNamespace:
    """An honest stand-in for RunData: what middle_zone reads (samples, queries, results)."""
    ids = tuple(f"d{i}" for i in range(9))
    rng = np.random.default_rng(0)
    samples = []
    for index in range(4):
        shown = tuple(int(i) for i in (range(9) if index == 0 else rng.permutation(9)))
        # positions 3..5 (the middle third) all get 0.5; the edges spread around it
        by_position = [0.0, 1.0, 2.0, 0.5, 0.5, 0.5, 3.0, -1.0, 4.0]
        scores = {ids[i]: by_position[p] for p, i in enumerate(shown)} if scored else None
        ranking = tuple(sorted(ids))
        label = OrderLabel.parse("identity" if index == 0 else f"random:{index - 1}")
        samples.append(Sample("q", index, label, shown, ranking, scores, {}))
    results = SimpleNamespace(
        position_bias={"exposure_top10": [1.0] * 9},
        reranker=SimpleNamespace(order_invariant=invariant),
    )
    queries = {"q": QueryRecord("q", "query", ids, {"d0": 1})}
    return SimpleNamespace(samples=tuple(samples), queries=queries, results=results)


def test_zones_split_in_thirds_with_the_middle_taking_the_remainder() -> None:
    assert zone_bounds(20) == ((0, 6), (6, 14), (14, 20))
    assert zone_bounds(9) == ((0, 3), (3, 6), (6, 9))


def test_a_homogenized_middle_has_zero_spread(tmp_path: Path) -> None:
    zone = middle_zone(fake_run(scored=True))  # type: ignore[arg-type]
    assert zone is not None and zone.n == 9 and zone.orders == 4
    assert zone.spread["middle"] == 0.0
    everything = np.std([0.0, 1.0, 2.0, 0.5, 0.5, 0.5, 3.0, -1.0, 4.0])
    assert zone.spread["first"] == pytest.approx(np.std([0.0, 1.0, 2.0]) / everything)
    assert zone.spread["last"] == pytest.approx(np.std([3.0, -1.0, 4.0]) / everything)
    image = plot_middle_zone({"icr": zone})
    assert image.png.startswith(b"\x89PNG") and image.pdf.startswith(b"%PDF-")
    assert b"<svg" in image.svg


def test_runs_without_scores_or_declared_invariant_have_no_middle_zone() -> None:
    assert middle_zone(fake_run(scored=False)) is None  # type: ignore[arg-type]
    assert middle_zone(fake_run(scored=True, invariant=True)) is None  # type: ignore[arg-type]


def test_a_report_of_an_order_sensitive_scored_run_shows_the_middle_zone(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the llm extra (torch) is not installed")
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.config import RunConfig
    from harness.report.load import load_run
    from harness.runner import execute_run, prepare_run
    from tests.conftest import write_rankgpt_folder

    data = write_rankgpt_folder(tmp_path / "data", queries=2, candidates=6)
    preset = tmp_path / "tiny-lft.yaml"
    preset.write_text("name: tiny-lft\nadapter: lft\nparams: {model: tiny-random-llama}\n")
    out = tmp_path / "run"
    config = RunConfig(reranker=str(preset), dataset=str(data), out=str(out), perms=3)
    execute_run(prepare_run(config.validate()))
    zone = middle_zone(load_run(out))
    assert zone is not None and zone.n == 6 and zone.orders == 8
    # a third's std relative to the whole list's: at most sqrt(n / 2) for two of n items
    assert all(0.0 <= v <= np.sqrt(3.0) for v in zone.spread.values())
    result = CliRunner().invoke(app, ["report", str(out), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Middle zone" in html and '"middle_zone"' in html
