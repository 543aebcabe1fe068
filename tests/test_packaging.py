"""A non-editable install must still find the bundled reranker presets and dataset cards."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_bundles_every_preset_and_card(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), "."],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    if build.returncode != 0:
        pytest.skip(f"could not build a wheel here: {build.stderr.strip().splitlines()[-1:]}")
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("rerankers", "datasets", "templates", "suites"):
        expected = {
            f"harness/_bundled/{folder}/{p.name}" for p in (REPO_ROOT / folder).glob("*.yaml")
        }
        assert expected and expected <= names, expected - names
